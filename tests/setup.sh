#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12 (as root), and nothing
# when it is all there: tests/run-all.sh runs it first, so the one test
# command of README.md works on a fresh machine, and .ci/run is that
# command. Idempotent; quick when there is nothing to do (no apt-get
# update then).
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests run, and the Debian package providing it: one line each.
# Apache for the end-to-end and package tests; lintian and the packaging
# tools for the .deb; chromium for the status page's rendering; unshare and
# mount for the scratch-root and disk-full tests; strace for the fault
# injection of tests/commit_crash.rs; python3 for the differential cases;
# rpm, rpmlint and cpio for the RPM; iproute2 for the status page's network
# namespace; python3-apt for Ansible's apt module.
needs=(
	"/usr/sbin/apache2 apache2"
	"chromium chromium"
	"curl curl"
	"lintian lintian"
	"dpkg-shlibdeps dpkg-dev"
	"objdump binutils"
	"file file"
	"unshare util-linux"
	"strace strace"
	"python3 python3"
	"rpm rpm"
	"rpm2cpio rpm2cpio"
	"rpmlint rpmlint"
	"cpio cpio"
	"ip iproute2"
	"/usr/lib/python3/dist-packages/apt/__init__.py python3-apt"
)

missing=()
for need in "${needs[@]}"; do
	read -r command package <<<"$need"
	command -v "$command" >/dev/null || [ -e "$command" ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "tests/setup.sh: missing ${missing[*]}: run as root to install them" >&2
		exit 1
	fi
	echo "tests/setup.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# rustfmt and clippy, which run-all.sh runs first.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# The packaging tools (packaging/README.md): cargo-about writes the
# copyright file, cargo-deb and cargo-generate-rpm build the packages; the
# versions the packaging was written against.
cargo deb --version >/dev/null 2>&1 || cargo install -q --locked cargo-deb@3.8.0
cargo generate-rpm --version >/dev/null 2>&1 || cargo install -q --locked cargo-generate-rpm@0.21.1
cargo about --version >/dev/null 2>&1 || cargo install -q --locked --features cli cargo-about@0.9.3

# Ansible, for tests/ansible.sh (ansible/edeploy-install.yml).
if ! command -v ansible-playbook >/dev/null; then
	python3 -m pip install -q --disable-pip-version-check 'ansible-core==2.19.*'
	if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

# The legacy implementation, our oracle in the differential tests: the
# hardware library 0.18 under Python 2.7.18 (pyenv). EDEPLOY_SKIP_ORACLE=1
# runs the tests without it.
[ "${EDEPLOY_SKIP_ORACLE:-}" = 1 ] && exit 0
export PYENV_VERSION=2.7.18
oracle() {
	python2.7 -c 'import hardware.state, hardware.matcher, hardware.generate, hardware.cmdb' 2>/dev/null
}
if ! oracle; then
	if ! python2.7 -c '' 2>/dev/null; then
		if ! command -v pyenv >/dev/null; then
			echo "tests/setup.sh: Python 2.7.18 is needed for the oracle: install pyenv, or set" \
				"EDEPLOY_SKIP_ORACLE=1 to run without the differential tests" >&2
			exit 1
		fi
		pyenv install -s 2.7.18
	fi
	python2.7 -m pip install -q --disable-pip-version-check hardware==0.18 ipaddr
	oracle
fi

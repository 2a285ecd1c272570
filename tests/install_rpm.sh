#!/bin/bash
# Test of the edeploy RPM, run as root on a Debian 12 machine (CI): build it
# with cargo-generate-rpm, check it with rpmlint, check its file list,
# dependencies and scriptlets, then install it with rpm into a scratch root
# and check what the scriptlets did through install, use, erase and
# reinstall.
#
#   bash tests/install_rpm.sh
#
# The scratch root is a copy-on-write view of this machine (an overlay of /
# in a private mount namespace, on a tmpfs), so the scriptlets, which rpm
# runs chrooted in it, find a shell and coreutils, and nothing reaches the
# real machine. httpd's user `apache` is added to it, as httpd-filesystem
# would; rpm runs with --nodeps (no RedHat packages here) and
# --force-debian (Debian's rpm refuses to install otherwise).
#
# Ends with `N passed, N failed`; exits non-zero on any failure.
set -u

top=$(cd "$(dirname "$0")/.." && pwd)

# shellcheck source=tests/tap.sh
. "$top/tests/tap.sh"

[ "$(id -u)" = 0 ] || fatal "must run as root"
[ -f /etc/debian_version ] || fatal "must run on Debian"

missing=()
for p in rpm rpm2cpio rpmlint cpio; do
	dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q ' installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "installing ${missing[*]}"
	{ apt-get update -qq >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
		fatal "apt-get install ${missing[*]}"
fi
cargo generate-rpm --version >/dev/null 2>&1 || fatal "cargo generate-rpm not found: cargo install cargo-generate-rpm --locked"
ok "rpm, rpmlint and cargo-generate-rpm installed"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- build and lint ----------------------------------------------------------
# The README's commands.
(cd "$top" && packaging/prepare.sh &&
	cargo generate-rpm --profile dist -o "$work/") >"$work/build.log" 2>&1
rpm=$(find "$work" -maxdepth 1 -name 'edeploy-*.rpm' | head -n 1)
if [ -z "$rpm" ]; then
	cat "$work/build.log"
	fatal "cargo generate-rpm builds an .rpm"
fi
ok "cargo generate-rpm builds $(basename "$rpm")"

rpmlint -c "$top/packaging/rpm/rpmlint.toml" -r "$top/packaging/rpm/edeploy.rpmlintrc" "$rpm" >"$work/rpmlint.log" 2>&1
rpmlint_rc=$?
sed 's/^/  rpmlint: /' "$work/rpmlint.log"
check "rpmlint reports no error and no warning" [ "$rpmlint_rc" = 0 ]
check "rpmlint counts 0 errors, 0 warnings" grep -q ' 0 errors, 0 warnings' "$work/rpmlint.log"

# --- metadata, file list, scriptlets -------------------------------------------
version=$(sed -n 's/^version *= *"\(.*\)"$/\1/p' "$top/Cargo.toml" | head -n 1)
check "version $version-1" [ "$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$rpm" 2>/dev/null)" = "$version-1" ]
rpm -qp --requires "$rpm" >"$work/requires" 2>/dev/null
check "requires httpd-filesystem (the apache user, /var/www/cgi-bin)" grep -qx 'httpd-filesystem' "$work/requires"
check "requires libc and libgcc_s" bash -c "grep -q '^libc.so.6' '$work/requires' && grep -q '^libgcc_s.so.1' '$work/requires'"
check "requires /bin/sh for its scriptlets" grep -qx '/bin/sh' "$work/requires"

# path, mode, owner, file flags (c: config, n: noreplace, d: doc).
rpm -qp --qf '[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME} %{FILEFLAGS:fflags}\n]' "$rpm" \
	>"$work/files" 2>/dev/null
sed 's/^/  file: /' "$work/files"
has_file() { grep -qx "$1" "$work/files"; }
grep -v '^[[:space:]]*\(#\|$\)' "$top/packaging/binaries" >"$work/binaries"
while read -r bin kind name; do
	case $kind in
	cgi) check "CGI $name in /var/www/cgi-bin/edeploy" has_file "/var/www/cgi-bin/edeploy/$name -rwxr-xr-x root " ;;
	bin) check "/usr/bin/$name" has_file "/usr/bin/$name -rwxr-xr-x root " ;;
	esac
done <"$work/binaries"
check "/usr/sbin/edeploy-upload" has_file "/usr/sbin/edeploy-upload -rwxr-xr-x root "
check "/etc/edeploy.conf is %config(noreplace)" has_file "/etc/edeploy.conf -rw-r--r-- root cn"
check "/etc/httpd/conf.d/edeploy.conf is %config(noreplace)" \
	has_file "/etc/httpd/conf.d/edeploy.conf -rw-r--r-- root cn"
check "example state" has_file "/usr/share/edeploy/examples/state -rw-r--r-- root "
check "example hardware" has_file "/usr/share/edeploy/examples/hw/kvm-test.json -rw-r--r-- root "
check "the licenses of the linked crates" has_file "/usr/share/licenses/edeploy/copyright -rw-r--r-- root d"
for page in man1/edeploy.1 man5/edeploy.conf.5 man8/edeploy-upload.8; do
	check "man page $page" has_file "/usr/share/man/$page.gz -rw-r--r-- root d"
done
check "bash completion" has_file "/usr/share/bash-completion/completions/edeploy -rw-r--r-- root "
check "no file in /var/lib (the scriptlets make the data directories)" bash -c "! grep -q '^/var/lib' '$work/files'"
check "binaries are stripped" bash -c \
	"rpm2cpio '$rpm' | (cd '$work' && mkdir x && cd x && cpio -id --quiet) && file '$work/x/usr/bin/edeploy' | grep -q ', stripped'"

rpm -qp --scripts "$rpm" >"$work/scripts" 2>/dev/null
check "postinstall scriptlet is packaging/rpm/post.sh" bash -c \
	"grep -q '^postinstall scriptlet' '$work/scripts' && grep -qF 'install -d -m 0750 -o \"\$WEB\"' '$work/scripts'"
check "postuninstall scriptlet is packaging/rpm/postun.sh" bash -c \
	"grep -q '^postuninstall scriptlet' '$work/scripts' && grep -qF 'config_is_pristine' '$work/scripts'"
for s in post postun; do
	check "packaging/rpm/$s.sh is valid sh" sh -n "$top/packaging/rpm/$s.sh"
done

# --- install into a scratch root ----------------------------------------------
cat >"$work/scratch.sh" <<'EOF'
set -u
r=$1/root
rpm=$2
top=$3
mount -t tmpfs tmpfs "$1" && mkdir "$1/upper" "$1/work" "$r" &&
	mount -t overlay overlay -o "lowerdir=/,upperdir=$1/upper,workdir=$1/work" "$r" &&
	mount --rbind /dev "$r/dev" && mount -t proc proc "$r/proc" && mount -t tmpfs tmpfs "$r/tmp" || {
	echo "not ok - scratch root (overlay of /)"
	exit
}
echo "ok - scratch root (overlay of /)"
passed=0
t() {
	local name=$1
	shift
	if "$@"; then echo "ok - $name"; else echo "not ok - $name"; fi
}
in_root() { chroot "$r" "$@"; }
owner_is() { [ "$(chroot "$r" stat -c %U:%G "$2" 2>/dev/null)" = "$1" ]; }
rpm_() { rpm --root "$r" --dbpath /var/lib/rpm --force-debian "$@"; }
absent() { [ ! -e "$r$1" ] && [ ! -L "$r$1" ]; }

in_root groupadd -r apache && in_root useradd -r -g apache -d /usr/share/httpd -s /sbin/nologin apache
rm -rf "$r/var/lib/edeploy" "$r/etc/edeploy.conf" "$r/var/lib/rpm" "$r/usr/bin/edeploy" "$r/usr/sbin/edeploy-upload" \
	"$r/usr/share/edeploy" "$r/var/www/cgi-bin/edeploy" "$r/etc/httpd"
rpm --root "$r" --dbpath /var/lib/rpm --initdb
rpm_ --nodeps -i "$rpm" >"$r/tmp/install.log" 2>&1
t "rpm --root --nodeps -i" [ $? = 0 ]
sed 's/^/  rpm -i: /' "$r/tmp/install.log"
t "rpm -q edeploy in the scratch root" rpm_ -q edeploy
t "upload.py is an executable CGI" [ -x "$r/var/www/cgi-bin/edeploy/upload.py" ]
for d in config hw logs health; do
	t "/var/lib/edeploy/$d belongs to apache" owner_is apache:apache "/var/lib/edeploy/$d"
done
t "lock file belongs to apache" owner_is apache:apache /var/lib/edeploy/edeploy.lock
t "the queue next to it belongs to apache" owner_is apache:apache /var/lib/edeploy/edeploy.lock.queue
t "config seeded with the example state" cmp -s "$top/legacy-config/state" "$r/var/lib/edeploy/config/state"
t "seeded files belong to apache" owner_is apache:apache /var/lib/edeploy/config/state
t "edeploy check is clean" in_root edeploy check /var/lib/edeploy/config
cp "$top/legacy-config/hw/kvm-test.json" "$r/tmp/hw.json"
t "edeploy-upload --dry-run gives kvm-test" \
	sh -c "chroot '$r' edeploy-upload --dry-run -f /tmp/hw.json | grep -qx '#EDEPLOY_PROFILE = kvm-test'"

rpm_ -e edeploy >"$r/tmp/erase.log" 2>&1
t "rpm -e" [ $? = 0 ]
for p in /var/lib/edeploy /var/www/cgi-bin/edeploy /usr/share/edeploy /etc/edeploy.conf \
	/etc/httpd/conf.d/edeploy.conf /usr/sbin/edeploy-upload; do
	t "erase of an unused install leaves nothing at $p" absent "$p"
done

# Install, provision a machine (as the CGI would, as apache), erase,
# reinstall: the configuration stays whole and the machine its profile.
rpm_ --nodeps -i "$rpm" >/dev/null 2>&1
in_root runuser -u apache -- edeploy-upload -f /tmp/hw.json >"$r/tmp/answer" 2>&1
t "a machine provisioned in the scratch root" grep -qx '#EDEPLOY_PROFILE = kvm-test' "$r/tmp/answer"
t "its hardware saved" test -n "$(find "$r/var/lib/edeploy/hw" -name '*.hw' -type f)"
# Again while the lock is taken: it waits in the queue next to the lock
# file, which the erase must remove.
flock -o "$r/var/lib/edeploy/edeploy.lock" sh -c \
	"chroot '$r' runuser -u apache -- edeploy-upload -f /tmp/hw.json >'$r/tmp/queued' 2>&1 & sleep 1"
for _ in $(seq 100); do grep -q '^#EDEPLOY_PROFILE' "$r/tmp/queued" 2>/dev/null && break; sleep 0.1; done
t "a machine that waited for the lock provisioned" grep -qx '#EDEPLOY_PROFILE = kvm-test' "$r/tmp/queued"
t "it waited in the queue next to the lock file (its intent kept for reuse)" \
	test -n "$(find "$r/var/lib/edeploy/edeploy.lock.queue" -name '.*.intent.recycled')"
rpm_ -e edeploy >"$r/tmp/erase2.log" 2>&1
t "rpm -e after use" [ $? = 0 ]
t "erase says it keeps the data" grep -q 'keeping /var/lib/edeploy/config' "$r/tmp/erase2.log"
t "erase keeps the used configuration whole" sh -c \
	"cd '$r/var/lib/edeploy/config' && ls state kvm-test.specs kvm-test.configure kvm-test.cmdb >/dev/null"
t "erase removes the lock file" absent /var/lib/edeploy/edeploy.lock
t "erase removes the queue of waiting requests" absent /var/lib/edeploy/edeploy.lock.queue
rpm_ --nodeps -i "$rpm" >/dev/null 2>&1
t "reinstall after erase" rpm_ -q edeploy
t "edeploy check is clean after erase and reinstall" in_root edeploy check /var/lib/edeploy/config
t "after erase and reinstall the machine gets kvm-test" \
	sh -c "chroot '$r' edeploy-upload --dry-run -f /tmp/hw.json | grep -qx '#EDEPLOY_PROFILE = kvm-test'"
EOF
mkdir "$work/scratch"
unshare -m --propagation private bash "$work/scratch.sh" "$work/scratch" "$rpm" "$top" >"$work/scratch.log" 2>&1
cat "$work/scratch.log"
passed=$((passed + $(grep -c '^ok - ' "$work/scratch.log")))
failed=$((failed + $(grep -c '^not ok - ' "$work/scratch.log")))
check "the scratch root ran its checks" grep -q 'reinstall after erase' "$work/scratch.log"

finish

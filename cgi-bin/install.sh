#!/bin/sh
# Drop-in install of the eDeploy CGIs without the Debian package:
#
#   cgi-bin/install.sh [--no-build] DIR
#
# Builds the release binaries (skipped with --no-build) and installs each CGI
# listed in packaging/binaries as DIR/<name>, e.g. DIR/upload.py and
# DIR/upload-health.py, replacing older ones atomically (a running CGI keeps
# its file). DIR is the directory the initrd's HTTP_PATH points at, usually
# /usr/lib/cgi-bin/edeploy. /etc/edeploy.conf and the data directories are
# left to you: see cgi-bin/README.md.
set -eu

die() { echo "install.sh: $*" >&2; exit 1; }

build=1
if [ "${1:-}" = "--no-build" ]; then
	build=0
	shift
fi
[ $# -eq 1 ] || die "usage: cgi-bin/install.sh [--no-build] DIR"
dir=$1

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

if [ -n "${CARGO_TARGET_DIR:-}" ]; then
	target=$CARGO_TARGET_DIR
else
	target=$(cargo metadata --no-deps --format-version 1 |
		sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
fi
[ -n "$target" ] || die "cannot find the cargo target directory"
[ "$build" = 0 ] || cargo build --release --locked

mkdir -p "$dir"
installed=0
grep -v '^[[:space:]]*\(#\|$\)' packaging/binaries | {
	while read -r bin kind name; do
		[ "$kind" = cgi ] || continue
		if [ ! -f "src/bin/$bin.rs" ]; then
			echo "install.sh: warning: skipping $bin: src/bin/$bin.rs does not exist yet" >&2
			continue
		fi
		src=$target/release/$bin
		[ -x "$src" ] || die "$src was not built (run without --no-build)"
		install -m 0755 "$src" "$dir/.$name.new"
		mv -f "$dir/.$name.new" "$dir/$name"
		echo "installed $dir/$name"
		installed=$((installed + 1))
	done
	[ "$installed" -gt 0 ] || die "no CGI to install"
}

#!/bin/sh
# Build the edeploy .deb: `packaging/build-deb.sh [--no-build] [OUTDIR]`.
#
# Runs `cargo build --release --locked` (skipped with --no-build), stages the
# package tree under <cargo target dir>/debian/ and assembles it with
# dpkg-deb; no debhelper and no Debian source package. Needs cargo, dpkg-dev
# (dpkg-shlibdeps, dpkg-parsechangelog) and binutils (strip). The .deb goes to
# OUTDIR (default <cargo target dir>/debian); its path is the last line printed.
set -eu

die() { echo "build-deb.sh: $*" >&2; exit 1; }

build=1
if [ "${1:-}" = "--no-build" ]; then
	build=0
	shift
fi
[ $# -le 1 ] || die "usage: packaging/build-deb.sh [--no-build] [OUTDIR]"
case ${1:-} in
""|/*) out=${1:-} ;;
*) out=$PWD/$1 ;;
esac

top=$(cd "$(dirname "$0")/.." && pwd)
pkg=$top/packaging
cd "$top"

for tool in cargo dpkg-deb dpkg-shlibdeps dpkg-parsechangelog strip; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install dpkg-dev binutils)"
done

# The Debian version comes from packaging/changelog and must carry the crate
# version, so a release bumps both.
version=$(dpkg-parsechangelog -l "$pkg/changelog" -S Version)
maintainer=$(dpkg-parsechangelog -l "$pkg/changelog" -S Maintainer)
crate_version=$(sed -n 's/^version *= *"\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ "${version%-*}" = "$crate_version" ] ||
	die "packaging/changelog is at $version but Cargo.toml at $crate_version: add a changelog entry"
# Reproducible: every timestamp is the changelog date.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(dpkg-parsechangelog -l "$pkg/changelog" -S Timestamp)}
export SOURCE_DATE_EPOCH
arch=$(dpkg --print-architecture)

if [ -n "${CARGO_TARGET_DIR:-}" ]; then
	target=$CARGO_TARGET_DIR
else
	target=$(cargo metadata --no-deps --format-version 1 |
		sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
fi
[ -n "$target" ] || die "cannot find the cargo target directory"
out=${out:-$target/debian}

[ "$build" = 0 ] || cargo build --release --locked

stage=$target/debian/edeploy_${version}_$arch
rm -rf "$stage"
umask 022
mkdir -p "$stage/DEBIAN" "$out"

# Binaries, from packaging/binaries.
elves=""
grep -v '^[[:space:]]*\(#\|$\)' "$pkg/binaries" > "$target/debian/binaries.list"
while read -r bin kind name; do
	if [ ! -f "src/bin/$bin.rs" ]; then
		echo "build-deb.sh: warning: skipping $bin: src/bin/$bin.rs does not exist yet" >&2
		continue
	fi
	src=$target/release/$bin
	[ -x "$src" ] || die "$src was not built (run without --no-build)"
	case $kind in
	cgi)
		dest=/usr/libexec/edeploy/$bin
		install -D -m 0755 "$src" "$stage$dest"
		mkdir -p "$stage/usr/lib/cgi-bin/edeploy"
		ln -s "../../../libexec/edeploy/$bin" "$stage/usr/lib/cgi-bin/edeploy/$name"
		;;
	bin)
		dest=/usr/bin/$name
		install -D -m 0755 "$src" "$stage$dest"
		;;
	*) die "packaging/binaries: unknown kind '$kind' for $bin" ;;
	esac
	# What dh_strip does.
	strip --remove-section=.comment --remove-section=.note --strip-unneeded "$stage$dest"
	elves="$elves $stage$dest"
done < "$target/debian/binaries.list"
[ -n "$elves" ] || die "no binary to package"

# Configuration files, shipped as conffiles.
install -D -m 0644 etc/edeploy.conf "$stage/etc/edeploy.conf"
install -D -m 0644 etc/apache2/edeploy.conf "$stage/etc/apache2/conf-available/edeploy.conf"

doc=$stage/usr/share/doc/edeploy
install -D -m 0644 "$pkg/copyright" "$doc/copyright"
install -m 0644 "$pkg/README.md" "$doc/README.Debian"
gzip -9n < "$pkg/changelog" > "$doc/changelog.Debian.gz"

# Example profiles: whatever legacy-config/ holds (dot files excepted). They
# live outside /usr/share/doc because postinst seeds the config from them.
examples=$stage/usr/share/edeploy/examples
if [ -d legacy-config ]; then
	(cd legacy-config && find . -name '.*' ! -name . -prune -o -type f -print) |
		while read -r f; do
			install -D -m 0644 "legacy-config/$f" "$examples/$f"
		done
fi
if [ -d "$examples" ]; then
	ln -s ../../edeploy/examples "$doc/examples"
else
	echo "build-deb.sh: warning: no legacy-config/: the package has no example profiles" >&2
fi

if [ -f "$pkg/lintian-overrides" ]; then
	install -D -m 0644 "$pkg/lintian-overrides" "$stage/usr/share/lintian/overrides/edeploy"
fi

# Control area.
for script in postinst prerm postrm; do
	install -m 0755 "$pkg/$script" "$stage/DEBIAN/$script"
done
(cd "$stage" && find etc -type f | sed 's,^,/,' | LC_ALL=C sort) > "$stage/DEBIAN/conffiles"
chmod 0644 "$stage/DEBIAN/conffiles"

# dpkg-shlibdeps insists on reading debian/control from the current directory.
shlib=$target/debian/shlibdeps
rm -rf "$shlib"
mkdir -p "$shlib/debian"
printf 'Source: edeploy\n\nPackage: edeploy\nArchitecture: any\n' > "$shlib/debian/control"
# shellcheck disable=SC2086 # $elves is a list of paths without spaces
depends=$(cd "$shlib" && dpkg-shlibdeps -O $elves | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || die "dpkg-shlibdeps found no dependency"

# Conffiles (all of etc/) are checksummed by dpkg itself, as dh_md5sums does.
(cd "$stage" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print |
	sed 's,^\./,,' | LC_ALL=C sort | xargs -d '\n' md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"

size=$(du -s -k --exclude=DEBIAN "$stage" | cut -f 1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@INSTALLED_SIZE@|$size|" -e "s|@DEPENDS@|$depends|" \
	"$pkg/control.in" > "$stage/DEBIAN/control"

find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=$out/edeploy_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"

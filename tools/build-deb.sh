#!/bin/sh
# make deb: build the Debian package from a copy of the tree with the
# distribution's tools (dpkg-buildpackage + debhelper), then run lintian.
# Usage: tools/build-deb.sh OUTDIR   -> OUTDIR/mailsplice_<version>_<arch>.deb
set -eu

out=${1:?usage: build-deb.sh OUTDIR}
top=$(cd "$(dirname "$0")/.." && pwd)
version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
src="$out/mailsplice-$version"

rm -rf "$out"
mkdir -p "$src"
out=$(cd "$out" && pwd)
src="$out/mailsplice-$version"
# the tracked tree (and new files not ignored yet), never build/ or caches
cd "$top"
if [ -d .git ]; then
	git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$src"
else
	tar --exclude=./build --exclude=./vmtest/cache --exclude=./vmtest/kpkg -cf - . |
		tar -xf - -C "$src"
fi

cd "$src"
dpkg-buildpackage -us -uc -b
cd "$out"
deb=$(ls mailsplice_*.deb)
echo "deb: $out/$deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
# lintian exits non-zero on errors; its warnings are printed for review,
# the accepted ones are overridden with reasons in debian/mailsplice.lintian-overrides
lintian --fail-on error,warning --info "$deb"
echo "lintian: clean"

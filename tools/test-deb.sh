#!/bin/sh
# make package-test: build the .deb (make deb: dpkg-buildpackage + lintian),
# install it into a fresh Debian 12 root made by debootstrap, and check that
# what an operator gets works there: the binary runs, the user and the state
# directory exist, an example configuration (paths pointed at real files)
# passes --check as the unit's ExecStartPre would run it, the unit verifies,
# and the package purges cleanly.
# Needs root and the Debian mirror; without them it says why and skips.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
work=${PACKAGE_TEST_DIR:-$top/build/package-test}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

skip() { echo "package-test: SKIP: $*"; exit 0; }
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null || skip "debootstrap not installed (make deps)"

make -C "$top" deb
deb=$(ls "$top"/build/deb/mailsplice_*.deb)

# a pristine debootstrap (kept for the next run) and a fresh copy to install into
base="$work/base"
root="$work/root"
cleanup() {
	mountpoint -q "$root/dev/pts" && umount "$root/dev/pts" || true
	mountpoint -q "$root/proc" && umount "$root/proc" || true
}
trap cleanup EXIT
if [ ! -x "$base/usr/bin/apt-get" ]; then
	rm -rf "$base"
	mkdir -p "$work"
	echo "package-test: debootstrap bookworm (minbase) into $base"
	debootstrap --variant=minbase bookworm "$base" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		skip "debootstrap from $mirror failed (offline?): $(tail -1 "$work/debootstrap.log")"
fi
rm -rf "$root"
cp -a "$base" "$root"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

mount -t proc proc "$root/proc"
mkdir -p "$root/dev/pts"
mount -t devpts -o newinstance devpts "$root/dev/pts" # apt logs through a pty
cp /etc/resolv.conf "$root/etc/resolv.conf"
# no service starts inside the chroot
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp "$deb" "$root/tmp/"
in_root apt-get -q update >/dev/null
in_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y install "/tmp/$(basename "$deb")" ||
	fail "apt-get install of the package failed"

echo "package-test: installed; checking"
in_root mailspliced --version || fail "mailspliced does not run"
in_root getent passwd mailsplice >/dev/null || fail "no mailsplice user"
[ -d "$root/var/lib/mailsplice" ] || fail "no /var/lib/mailsplice"
for f in /lib/systemd/system/mailsplice.service /usr/share/man/man8/mailspliced.8.gz \
	/usr/share/man/man5/mailsplice.toml.5.gz \
	/usr/share/doc/mailsplice/examples/dovecot-postfix-to-stalwart.toml \
	/usr/share/doc/mailsplice/examples/stalwart-to-stalwart.toml \
	/usr/share/doc/mailsplice/examples/mappings.tsv \
	/usr/share/doc/mailsplice/examples/dovecot-postfix-trust.conf \
	/usr/lib/tmpfiles.d/mailsplice.conf /usr/lib/modules-load.d/mailsplice.conf; do
	[ -e "$root$f" ] || fail "$f not installed"
done
# dh_compress gzips documents above 4 KiB
[ -e "$root/usr/share/doc/mailsplice/cutover.md.gz" ] ||
	[ -e "$root/usr/share/doc/mailsplice/cutover.md" ] || fail "cutover.md not installed"

# the operator's first steps, as docs/cutover.md and the unit describe them
mkdir -p "$root/etc/mailsplice/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj /CN=mail.example.com -keyout "$root/etc/mailsplice/tls/privkey.pem" \
	-out "$root/etc/mailsplice/tls/fullchain.pem" 2>/dev/null
chmod 0600 "$root/etc/mailsplice/tls/privkey.pem"
openssl rand -hex 32 >"$root/etc/mailsplice/admin.token"
chmod 0600 "$root/etc/mailsplice/admin.token"
install -o "$(in_root id -u mailsplice)" -g "$(in_root id -g mailsplice)" -m 0640 \
	"$root/usr/share/doc/mailsplice/examples/mappings.tsv" "$root/var/lib/mailsplice/mappings.tsv"
for example in dovecot-postfix-to-stalwart stalwart-to-stalwart; do
	cp "$root/usr/share/doc/mailsplice/examples/$example.toml" "$root/etc/mailsplice/mailsplice.toml"
	start_pre=$(sed -n 's/^ExecStartPre=//p' "$root/lib/systemd/system/mailsplice.service")
	# shellcheck disable=SC2086 # the unit's command line, word-split as systemd does
	in_root $start_pre || fail "$example: the unit's ExecStartPre (--check) failed"
done
# the unit against the root's own systemd (252) and man pages: every directive
# known, ExecStart/ExecStartPre/ExecReload executables present, Documentation=
# pages installed
in_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends \
	systemd man-db >/dev/null || fail "installing systemd and man-db into the root"
in_root systemd-analyze verify /lib/systemd/system/mailsplice.service >"$work/verify.log" 2>&1 ||
	{ cat "$work/verify.log"; fail "systemd-analyze verify mailsplice.service"; }
if [ -s "$work/verify.log" ]; then
	cat "$work/verify.log"
	fail "systemd-analyze verify printed warnings"
fi
in_root man -w mailspliced mailsplice.toml >/dev/null || fail "man pages not found by man"

in_root apt-get -q -y purge mailsplice >/dev/null || fail "purge failed"
[ ! -e "$root/usr/sbin/mailspliced" ] || fail "binary left after purge"
[ ! -e "$root/var/lib/mailsplice" ] || fail "/var/lib/mailsplice left after purge"
echo "package-test: PASS ($(basename "$deb") installs, checks and purges in a fresh bookworm root)"

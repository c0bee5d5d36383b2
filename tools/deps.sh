#!/bin/sh
# Install every build, test, vmtest and benchmark dependency from Debian's own
# packages. Non-interactive and idempotent; run as root (make deps).
set -eu

[ "$(id -u)" = 0 ] || { echo "deps: must run as root (apt-get)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
APT="apt-get -o DPkg::Lock::Timeout=600 -y -q"

# build
PKGS="make gcc libc6-dev pkg-config clang llvm clang-format
 libbpf-dev bpftool libssl-dev openssl libevent-dev libjansson-dev
 libnl-3-dev libnl-idiag-3-dev libcap-dev libsystemd-dev libpcre2-dev libhiredis-dev
 libpq-dev"
# tests: real backends and real clients
PKGS="$PKGS libcmocka-dev python3 python3-pytest
 dovecot-core dovecot-imapd dovecot-pop3d dovecot-managesieved dovecot-sieve
 dovecot-lmtpd postfix swaks sieve-connect curl ca-certificates bsdutils
 iproute2 procps valgrind groff-base redis-server redis-tools postgresql"
# vmtest: QEMU, a static busybox for the initramfs, kernel unpacking
PKGS="$PKGS qemu-system-x86 busybox-static kmod cpio file xz-utils zstd lz4"
# fuzzing, benchmarks, packaging
PKGS="$PKGS libclang-rt-14-dev nginx libnginx-mod-mail haproxy gnuplot-nox
 linux-perf debhelper dpkg-dev devscripts lintian debootstrap fakeroot"

# Postfix asks a debconf question; "No configuration" leaves /etc/postfix/main.cf
# absent, which is what the tests want (they always pass their own -c DIR).
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

# Keep the packaged daemons (dovecot, postfix, nginx, haproxy, redis, postgresql) from starting on
# the public ports during installation: the tests start their own instances.
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' > "$policy"
	chmod 0755 "$policy"
	made_policy=1
fi
trap '[ -z "$made_policy" ] || rm -f "$policy"' EXIT

$APT update
# shellcheck disable=SC2086
$APT install --no-install-recommends $PKGS

# On a host where systemd started them anyway, stop and disable them.
if [ -d /run/systemd/system ]; then
	for s in dovecot postfix nginx haproxy redis-server postgresql; do
		systemctl disable --now "$s" >/dev/null 2>&1 || true
	done
fi
echo "deps: all packages installed"

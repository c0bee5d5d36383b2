# shellcheck shell=bash
# vmtest/lib.sh: helpers shared by vmtest/run and vmtest/run-matrix (sourced, not run).
#
# Kernel packages are never installed on the host: installing linux-image-* pulls in
# initramfs-tools -> udev, which upgrades systemd/libsystemd0 under everyone's feet.
# Instead the .deb is fetched with `apt-get download`, unpacked with `dpkg-deb -x` into
# vmtest/kpkg/<package>_<version>/, and given a modules.dep with `depmod -b` (the .deb
# ships none). Everything derived from it (the uncompressed vmlinux, the initramfs)
# lives in vmtest/cache/<package>_<version>/. Both folders are git-ignored and can be
# deleted at any time.
#
# Functions return non-zero with a one-line explanation in VMTEST_REASON; the callers
# decide whether that is a skip or an error.

VMTEST_DIR=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
VMTEST_KPKG=${VMTEST_KPKG:-$VMTEST_DIR/kpkg}
VMTEST_CACHE=${VMTEST_CACHE:-$VMTEST_DIR/cache}
VMTEST_REASON=

# Modules the initramfs must load to mount a 9p root and the overlay on top of it.
# Whatever of them the kernel has built in is simply not copied.
VMTEST_INITRD_MODULES=(virtio_pci 9pnet_virtio 9p overlay)

vmtest_log() { printf 'vmtest: %s\n' "$*" >&2; }

# vmtest_kernel_entries FILE: the entries of a kernel list, one per line, without
# comments or blank lines.
vmtest_kernel_entries() {
	sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$1"
}

# vmtest_memo_get NAME / vmtest_memo_put NAME VALUE: answers from apt remembered in
# cache/apt-memo for as long as the apt lists stay the same. Every apt-cache call
# costs 0.7 s here (apt keeps no binary cache on this host), which would add seconds
# to a run that takes four. get sets VMTEST_MEMO, or fails when nothing is known.
vmtest_apt_key() {
	if [[ -z ${VMTEST_APT_KEY:-} ]]; then
		# apt-get update rewrites the lists: their names, sizes and times are the key.
		VMTEST_APT_KEY=$(stat -c '%n %s %Y' /var/lib/apt/lists/* /etc/apt/preferences* \
			2>/dev/null | sha256sum | cut -c1-16)
	fi
}
vmtest_memo_get() {
	local line
	vmtest_apt_key
	VMTEST_MEMO=
	[[ -f $VMTEST_CACHE/apt-memo ]] || return 1
	line=$(grep -m1 -F -e "$VMTEST_APT_KEY $1 " "$VMTEST_CACHE/apt-memo" || true)
	[[ $line == "$VMTEST_APT_KEY $1 "?* ]] || return 1
	VMTEST_MEMO=${line#"$VMTEST_APT_KEY $1 "}
}
vmtest_memo_put() {
	local memo=$VMTEST_CACHE/apt-memo
	vmtest_apt_key
	[[ -n $2 ]] || return 0
	mkdir -p "$VMTEST_CACHE"
	# Drop the answers of older apt lists, then add ours. Two writers racing lose one
	# line, which costs one more apt-cache call later.
	{
		grep -F -e "$VMTEST_APT_KEY " "$memo" 2>/dev/null || true
		printf '%s %s %s\n' "$VMTEST_APT_KEY" "$1" "$2"
	} >"$memo.$$" && mv -f -- "$memo.$$" "$memo"
}

# vmtest_candidate PKG: set VMTEST_CANDIDATE to the version apt would download for
# PKG, or to nothing.
vmtest_candidate() {
	if vmtest_memo_get "candidate:$1"; then
		VMTEST_CANDIDATE=$VMTEST_MEMO
		return 0
	fi
	VMTEST_CANDIDATE=$(apt-cache policy -- "$1" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }')
	[[ $VMTEST_CANDIDATE != "(none)" ]] || VMTEST_CANDIDATE=
	vmtest_memo_put "candidate:$1" "$VMTEST_CANDIDATE"
}

# vmtest_cached_dirs: unpacked kernels under kpkg/, newest package name first.
vmtest_cached_dirs() {
	local d
	for d in "$VMTEST_KPKG"/*_*/.vmtest-ready; do
		[[ -e $d ]] && basename "$(dirname "$d")"
	done | sort -rV
}

# vmtest_cached_of PKG [VERSION]: the unpacked directory name of PKG at VERSION if
# there is one, else of its newest cached version, else nothing.
vmtest_cached_of() {
	local pkg=$1 want=${2:-} d newest=
	while read -r d; do
		[[ ${d%%_*} == "$pkg" ]] || continue
		if [[ ${d#*_} == "$want" ]]; then
			printf '%s\n' "$d"
			return 0
		fi
		[[ -n $newest ]] || newest=$d
	done < <(vmtest_cached_dirs)
	[[ -z $newest ]] || printf '%s\n' "$newest"
}

# vmtest_resolve ENTRY: set VMTEST_PKG to the concrete image package an entry of
# vmtest/kernels stands for (see that file for the three forms).
vmtest_resolve() {
	local entry=$1 name dep
	VMTEST_REASON='' VMTEST_PKG=''
	if vmtest_memo_get "resolve:$entry"; then
		VMTEST_PKG=$VMTEST_MEMO
		return 0
	fi
	if [[ $entry == *[*?[]* ]]; then
		# A glob: the newest matching package apt has a candidate for. apt-cache pkgnames
		# wants a literal prefix, so hand it everything before the first glob character.
		while read -r name; do
			# shellcheck disable=SC2053 # $entry is a glob on purpose
			[[ $name == $entry ]] || continue
			vmtest_candidate "$name"
			if [[ -n $VMTEST_CANDIDATE ]]; then
				VMTEST_PKG=$name
				break
			fi
		done < <(apt-cache pkgnames "${entry%%[*?[]*}" 2>/dev/null | sort -rV)
		if [[ -z $VMTEST_PKG ]]; then
			# Offline, or the apt lists are gone: use what was unpacked before.
			name=$(vmtest_cached_dirs | while read -r name; do
				# shellcheck disable=SC2053
				[[ ${name%%_*} != $entry ]] || { echo "${name%%_*}" && break; }
			done)
			if [[ -z $name ]]; then
				VMTEST_REASON="no package matching '$entry' is known to apt (apt-get update?)"
				return 1
			fi
			vmtest_log "apt knows no package matching $entry; using the cached $name"
			VMTEST_PKG=$name
			return 0 # not remembered: apt may know better once it has lists again
		fi
	else
		# A package name. Meta packages such as linux-image-amd64 depend on the versioned
		# image; images themselves depend on no other linux-image-*. Follow at most a few
		# hops so that a dependency loop cannot hang us.
		VMTEST_PKG=$entry
		for _ in 1 2 3; do
			dep=$(apt-cache show --no-all-versions -- "$VMTEST_PKG" 2>/dev/null |
				awk -F': ' '$1 == "Depends" { print $2; exit }' |
				sed 's/[,|]/\n/g' | awk '{ print $1 }' | grep -m1 '^linux-image-' || true)
			[[ -n $dep ]] || break
			VMTEST_PKG=$dep
		done
		# An unknown name is left as it is: vmtest_fetch may still find it cached.
		vmtest_candidate "$VMTEST_PKG"
		[[ -n $VMTEST_CANDIDATE ]] || return 0
	fi
	vmtest_memo_put "resolve:$entry" "$VMTEST_PKG"
}

# vmtest_fetch PKG: make sure an unpacked, depmod'ed copy of PKG exists; sets
# VMTEST_KROOT (the unpacked tree), VMTEST_KVER (uname -r of that kernel) and
# VMTEST_DEBVER (the package version). Downloads only when apt has a newer candidate
# than what is cached; offline, an older cached copy is used with a note.
vmtest_fetch() {
	local pkg=$1 want have dir deb dl err lockfd rc=0
	VMTEST_REASON=
	mkdir -p "$VMTEST_KPKG/debs" "$VMTEST_KPKG/locks"
	# One lock per package: two runs of the same kernel must not unpack it twice, and a
	# 100 MB download of one kernel must not hold up runs of another.
	exec {lockfd}>"$VMTEST_KPKG/locks/$pkg.lock"
	flock -w 1800 "$lockfd" || {
		VMTEST_REASON="timed out waiting for $VMTEST_KPKG/locks/$pkg.lock"
		exec {lockfd}>&-
		return 1
	}
	vmtest_candidate "$pkg"
	want=$VMTEST_CANDIDATE
	have=$(vmtest_cached_of "$pkg" "$want")

	if [[ -n $want && $have != "${pkg}_$want" ]] || [[ -z $have ]]; then
		# Reuse a .deb downloaded earlier (the unpacked tree may have been deleted).
		deb=
		for dl in "$VMTEST_KPKG/debs/${pkg}_"*.deb; do
			[[ -e $dl ]] || continue
			[[ -n $want && $(dpkg-deb -f "$dl" Version) == "$want" ]] && deb=$dl
		done
		if [[ -z $deb && -z $want ]]; then
			err="apt has no candidate (unknown package, or apt-get update needed)"
		elif [[ -z $deb ]]; then
			vmtest_log "fetching $pkg $want (apt-get download)"
			dl=$(mktemp -d "$VMTEST_KPKG/debs/.download.XXXXXX")
			if err=$(cd "$dl" && apt-get download -q -- "$pkg" 2>&1); then
				deb=$(find "$dl" -maxdepth 1 -name '*.deb' | head -n1)
				if [[ -n $deb ]]; then
					mv -f -- "$deb" "$VMTEST_KPKG/debs/"
					deb=$VMTEST_KPKG/debs/$(basename "$deb")
				else
					err="apt-get download $pkg succeeded but left no .deb"
				fi
			else
				# apt's last E: line says why (404, no network, unknown package).
				err=$(grep '^E:' <<<"$err" | tail -n1 | sed 's/^E: //')
				err=${err:-apt-get download $pkg failed}
			fi
			rm -rf -- "$dl"
		fi
		if [[ -n $deb ]]; then
			vmtest_unpack "$pkg" "$deb" || rc=1
			have=$(vmtest_cached_of "$pkg" "$want")
		elif [[ -n $have ]]; then
			vmtest_log "cannot fetch $pkg $want ($err); using the cached ${have#*_}"
		else
			VMTEST_REASON=$err
			rc=1
		fi
	fi
	exec {lockfd}>&-
	[[ $rc == 0 && -n $have ]] || return 1

	dir=$VMTEST_KPKG/$have
	# shellcheck disable=SC2034 # results, read by the callers
	VMTEST_KROOT=$dir
	# shellcheck disable=SC2034
	VMTEST_DEBVER=${have#*_}
	# shellcheck disable=SC2034
	VMTEST_KVER=$(<"$dir/.vmtest-ready")
}

# vmtest_unpack PKG DEB: unpack into kpkg/PKG_VERSION (under the caller's lock).
vmtest_unpack() {
	local pkg=$1 deb=$2 ver dest tmp kver
	local -a images
	ver=$(dpkg-deb -f "$deb" Version)
	dest=$VMTEST_KPKG/${pkg}_$ver
	tmp=$dest.tmp
	rm -rf -- "$tmp"
	vmtest_log "unpacking $(basename "$deb")"
	dpkg-deb -x "$deb" "$tmp" || {
		VMTEST_REASON="dpkg-deb -x $deb failed"
		return 1
	}
	images=("$tmp"/boot/vmlinuz-*)
	if [[ ! -e ${images[0]} || ${#images[@]} -ne 1 ]]; then
		VMTEST_REASON="$pkg holds no single boot/vmlinuz-* (not a kernel image package?)"
		rm -rf -- "$tmp"
		return 1
	fi
	kver=${images[0]##*/vmlinuz-}
	# depmod -b and modprobe -d look in ROOT/lib/modules; newer packages put the
	# modules under usr/lib/modules (merged /usr).
	if [[ ! -d $tmp/lib/modules/$kver && -d $tmp/usr/lib/modules/$kver ]]; then
		ln -s usr/lib "$tmp/lib"
	fi
	depmod -b "$tmp" "$kver" || {
		VMTEST_REASON="depmod -b $tmp $kver failed"
		return 1
	}
	rm -rf -- "$dest"
	mv -- "$tmp" "$dest"
	# Last: only a complete tree is ever listed by vmtest_cached_dirs.
	printf '%s\n' "$kver" >"$dest/.vmtest-ready"
}

# vmtest_le FILE SIZE OFFSET: the little-endian unsigned integer of SIZE bytes there.
vmtest_le() {
	od -An -t "u$2" -j "$(($3))" -N "$2" "$1" | tr -d ' '
}

# vmtest_extract_vmlinux BZIMAGE OUT: write the uncompressed ELF kernel inside a
# bzImage to OUT. QEMU boots such an ELF through its PVH entry point, which under TCG
# saves the 2-3 s the kernel would spend decompressing itself.
#
# The x86 boot header says where the payload is (Documentation/arch/x86/boot.rst):
# setup_sects at 0x1f1, payload_offset/payload_length at 0x248/0x24c (protocol 2.08+),
# relative to the protected-mode code that follows the (setup_sects + 1) sectors.
vmtest_extract_vmlinux() {
	local img=$1 out=$2 setup proto off len magic start
	proto=$(vmtest_le "$img" 2 0x206)
	if ((proto < 0x208)); then
		VMTEST_REASON="boot protocol $(printf %#x "$proto") has no payload fields"
		return 1
	fi
	setup=$(vmtest_le "$img" 1 0x1f1)
	((setup == 0)) && setup=4
	off=$(vmtest_le "$img" 4 0x248)
	len=$(vmtest_le "$img" 4 0x24c)
	start=$(((setup + 1) * 512 + off))
	magic=$(od -An -tx1 -j "$start" -N 4 "$img" | tr -d ' ')
	local -a unpack
	case $magic in
	fd377a58) unpack=(xz -dc) ;;      # Debian 6.1 generic: CONFIG_KERNEL_XZ
	28b52ffd) unpack=(zstd -dcq) ;;   # Debian 6.12: CONFIG_KERNEL_ZSTD
	02214c18) unpack=(lz4 -dc) ;;     # Debian 6.1 cloud: CONFIG_KERNEL_LZ4
	1f8b08*) unpack=(gzip -dc) ;;
	*)
		VMTEST_REASON="unknown payload compression (magic $magic)"
		return 1
		;;
	esac
	# Except for gzip, whose trailer already ends in the size, the build appends the
	# uncompressed size as 4 more bytes, which the decompressors take for garbage.
	[[ ${unpack[0]} == gzip ]] || len=$((len - 4))
	tail -c "+$((start + 1))" "$img" | head -c "$len" | "${unpack[@]}" >"$out.tmp" || true
	if [[ $(od -An -tx1 -N4 "$out.tmp" | tr -d ' ') != 7f454c46 ]]; then
		rm -f -- "$out.tmp"
		VMTEST_REASON="decompressing the payload with ${unpack[0]} gave no ELF"
		return 1
	fi
	mv -- "$out.tmp" "$out"
}

# vmtest_build_initrd KROOT KVER INIT OUT: a cpio with static busybox, the modules
# listed in VMTEST_INITRD_MODULES (and their dependencies, in load order, decompressed)
# and INIT as /init.
vmtest_build_initrd() {
	local kroot=$1 kver=$2 init=$3 out=$4 busybox=${VMTEST_BUSYBOX:-/bin/busybox}
	local t m ko base
	if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
		VMTEST_REASON="$busybox is not a static busybox (apt-get install busybox-static)"
		return 1
	fi
	t=$(mktemp -d "${TMPDIR:-/tmp}/vmtest-initrd.XXXXXX")
	mkdir -p "$t"/{bin,dev,proc,sys,newroot,lower,rw,modules}
	cp -- "$busybox" "$t/bin/busybox"
	ln -s busybox "$t/bin/sh"
	cp -- "$init" "$t/init"
	chmod 0755 "$t/init"
	: >"$t/modules/order"
	local -a kos=()
	for m in "${VMTEST_INITRD_MODULES[@]}"; do
		# "insmod /path" lines are modules to load, in order; "builtin m" needs nothing.
		if ! modprobe -d "$kroot" -S "$kver" --show-depends "$m" >"$t/deps" 2>&1; then
			VMTEST_REASON="kernel $kver has no module $m: $(head -n1 "$t/deps")"
			[[ $m == 9p* ]] && VMTEST_REASON+=" (vmtest needs the generic -amd64 flavour)"
			rm -rf -- "$t"
			return 1
		fi
		mapfile -t -O "${#kos[@]}" kos < <(awk '$1 == "insmod" { print $2 }' "$t/deps")
	done
	for ko in "${kos[@]}"; do
		base=$(basename "$ko")
		base=${base%.ko*}.ko
		grep -qxF "$base" "$t/modules/order" && continue # shared dependency
		# Decompress here so that the guest's insmod never has to.
		case $ko in
		*.ko.xz) xz -dc "$ko" ;;
		*.ko.zst) zstd -dcq "$ko" ;;
		*.ko.gz) gzip -dc "$ko" ;;
		*) cat "$ko" ;;
		esac >"$t/modules/$base" || {
			VMTEST_REASON="cannot decompress $ko"
			rm -rf -- "$t"
			return 1
		}
		printf '%s\n' "$base" >>"$t/modules/order"
	done
	rm -f -- "$t/deps"
	if ! (cd "$t" && find . -print0 | LC_ALL=C sort -z | cpio -o -0 -H newc --quiet -R 0:0) |
		gzip -1 >"$out.tmp"; then
		VMTEST_REASON="cpio failed"
		rm -rf -- "$t" "$out.tmp"
		return 1
	fi
	rm -rf -- "$t"
	mv -- "$out.tmp" "$out"
}

# vmtest_kvm_works KERNEL_IMAGE: true when KVM can boot that kernel here. /dev/kvm can
# exist and not work: under nested virtualisation QEMU -cpu host aborts at once ("failed
# to set MSR 0x10a", IA32_ARCH_CAPABILITIES), and a CPU model without that MSR booted a
# boot sector but hung in the kernel. So the probe is a real boot of KERNEL_IMAGE, with
# no initramfs: a kernel that gets to the end of its boot panics with "VFS: Unable to
# mount root fs" (panic=-1 makes QEMU exit). Well under a second under KVM; cut off after
# 20 s. The answer is remembered in cache/kvm-probe for this boot of the host, this QEMU
# and this kernel image. On false, VMTEST_REASON says what happened.
vmtest_kvm_works() {
	local image=$1 key line out rc con
	key=$({
		cat /proc/sys/kernel/random/boot_id
		stat -Lc '%n %s %Y' "$(command -v qemu-system-x86_64)" "$image" /dev/kvm
	} 2>/dev/null | sha256sum | cut -c1-16)
	mkdir -p "$VMTEST_CACHE"
	line=$(grep -m1 -F -e "$key " "$VMTEST_CACHE/kvm-probe" 2>/dev/null || true)
	if [[ -n $line ]]; then
		VMTEST_REASON=${line#"$key "}
		VMTEST_REASON=${VMTEST_REASON#* }
		[[ $line == "$key yes "* ]]
		return
	fi
	con=$(mktemp "${TMPDIR:-/tmp}/vmtest-kvm.XXXXXX")
	rc=0
	out=$(timeout -k 2 20 qemu-system-x86_64 -machine pc,accel=kvm -cpu host -smp 1 -m 256M \
		-nodefaults -no-user-config -display none -no-reboot -kernel "$image" \
		-append "console=ttyS0 loglevel=3 panic=-1" -chardev "file,id=con,path=$con" \
		-serial chardev:con </dev/null 2>&1) || rc=$?
	local verdict=no
	if grep -q 'Unable to mount root fs' "$con"; then
		verdict=yes VMTEST_REASON="booted the kernel under KVM"
	elif ((rc == 124 || rc == 137)); then
		VMTEST_REASON="a trivial KVM boot did not finish within 20 s"
	else
		VMTEST_REASON="a trivial KVM boot failed (qemu status $rc: $(printf '%s' "$out" | head -1))"
	fi
	rm -f -- "$con"
	{
		grep -v -F -e "$key " "$VMTEST_CACHE/kvm-probe" 2>/dev/null | tail -20 || true
		printf '%s %s %s\n' "$key" "$verdict" "$VMTEST_REASON"
	} >"$VMTEST_CACHE/kvm-probe.$$" && mv -f -- "$VMTEST_CACHE/kvm-probe.$$" "$VMTEST_CACHE/kvm-probe"
	[[ $verdict == yes ]]
}

#!/bin/bash
# lab.sh - Ferry's nested-virtualisation lab.
#
# The build machine's /dev/kvm cannot boot a stock Linux kernel, so stock Linux guests
# are tested one level down:
#   L0  this machine runs QEMU (TCG) emulating an AMD CPU with SVM+NPT;
#   L1  a stock Debian kernel, booted from its uncompressed vmlinux (PVH entry: no
#       decompression under TCG); kvm-amd gives it a real /dev/kvm.  Its root fs is this
#       machine's / over virtio-9p (read-only) under a tmpfs overlay, so every host
#       program runs unchanged; the current directory is shared read-write;
#   L2  guests started inside L1 (ferry-vmm, or qemu -enable-kvm -cpu host).
#
# Commands:
#   lab.sh setup
#       install the needed Debian packages (apt-get), fetch and unpack the kernel package
#       linux-image-amd64 depends on, extract its vmlinux, build the L1 initramfs.
#       Idempotent; needs root only when packages are missing.
#   lab.sh run [options] [--] CMD [ARG...]
#       boot L1, run CMD there with bash (cwd = current directory, /dev/kvm present),
#       stream its stdout/stderr, exit with its status.
#   lab.sh mkinitrd [-m MOD[,MOD...]]... [-b BINARY]... OUT INIT
#       busybox initramfs for L2 guests: its /init mounts proc/sys/dev, loads the lab
#       kernel's modules MOD (dependencies included) and runs the shell script INIT, which
#       must end the guest itself (poweroff -f).  -b adds a host binary and its libraries.
#   lab.sh info
#       print the lab's paths as shell assignments (eval "$(lab/lab.sh info)"):
#       KVER, VMLINUZ (bzImage, for ferry-vmm), VMLINUX (uncompressed ELF), MODULES, ...
#
# Options of "run":
#   -t, --timeout SEC       limit for the whole run, L1 boot included (default 3600)
#       --boot-timeout SEC  L1 must reach userspace within SEC (default 120) ...
#       --retries N         ... else it is killed and booted again, N times (default 1)
#       --hang-timeout SEC  L1 writes a heartbeat every 5 s; none for SEC (default 120,
#                           0 = off) means L1 hung: it is killed (status 125)
#       --smp N             L1 vCPUs (default 1; N > 1 uses multi-threaded TCG)
#       --mem MIB           L1 memory (default 2048)
#       --share DIR         also share DIR read-write at the same path (repeatable)
#   -e, --env VAR[=VALUE]   export VAR to CMD (default value: this shell's; repeatable)
#       --console           copy L1's serial console to stderr
#       --stats             print L1 boot and run times to stderr
#       --keep              keep the run directory ($LAB_DIR/runs/*)
#   CMD always sees LAB_DIR and FERRY_LAB_L1=1.
#
# Exit status of "run": CMD's status; 124 when --timeout expired; 125 when the lab failed
# (L1 did not boot, hung, or ended without a status).  On 124/125 the tail of the L1
# console is printed.
#
# Environment: LAB_DIR (default ~/.cache/ferry-lab) holds all that this script creates;
# LAB_KERNEL_PKG=linux-image-<version>-amd64 pins the kernel; LAB_L1_APPEND adds L1 kernel
# parameters.

set -euo pipefail

LAB_DIR=${LAB_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-lab}
KDIR=$LAB_DIR/kernel
L1_INITRD=$LAB_DIR/l1-initrd.cpio
PKGS="qemu-system-x86 qemu-utils busybox-static cpio kmod xz-utils iproute2 iperf3 socat redis-server redis-tools e2fsprogs jq"
L1_APPEND="console=ttyS0 panic=-1 cryptomgr.notests mitigations=off"   # full log: for failures
# kernel parameters measured to speed up a stock L2 guest's boot (see info)
L2_APPEND="console=ttyS0 panic=-1 quiet pci=noearly cryptomgr.notests mitigations=off 8250.nr_uarts=1 rodata=off"
NINEP="trans=virtio,version=9p2000.L,msize=512000"
SELF=${BASH_SOURCE[0]}
TMPTREES=()    # temporary trees, removed on exit
trap '[ ${#TMPTREES[@]} -eq 0 ] || rm -rf "${TMPTREES[@]}"' EXIT

say() { echo "lab: $*" >&2; }
die() { say "$*"; exit 125; }

kver() {
    [ -s "$KDIR/KVER" ] || die "lab kernel missing in $KDIR; run: lab/lab.sh setup"
    local v; read -r v < "$KDIR/KVER"; echo "$v"
}

# ------------------------------------------------------------------ initramfs helpers
# Initramfs trees are packed as uncompressed newc cpio archives (nothing to decompress in
# slow guests).  The kernel unpacks concatenated archives in order, so an L2 initramfs is
# the prebuilt $L2_BASE (busybox + /init) followed by the test's own files.
L2_BASE=$LAB_DIR/l2-base.cpio

# shell code that starts every lab /init (run by "/bin/busybox sh")
# shellcheck disable=SC2016  # expanded by the guest
INIT_MOUNTS='export PATH=/sbin:/bin:/usr/sbin:/usr/bin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev'
# L1 only: kvm takes the host's TSC rate once, when it loads (the guests' TSC
# rate and kvmclock's scale follow it; an emulated CPU without an invariant
# TSC gets no update later).  Linux refines its boot-time TSC calibration
# about a second into the boot, and the lab's kvm-amd load raced with that:
# wait for the refined clocksource before loading the modules.
L1_TSC_WAIT='i=0
while [ "$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)" = tsc-early ] &&
      [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done'
INIT_MODULES='if [ -e /lib/lab-modules/order ]; then
    while read -r ko; do insmod "/lib/lab-modules/$ko" || echo "init: insmod $ko failed"; done < /lib/lab-modules/order
fi'
INIT_HEAD="$INIT_MOUNTS
$INIT_MODULES"

new_tree() {    # new_tree VAR: an empty temporary tree (removed on exit) in VAR
    local t; t=$(mktemp -d "${TMPDIR:-/tmp}/lab-tree.XXXXXX")
    chmod 755 "$t"
    TMPTREES+=("$t")
    printf -v "$1" %s "$t"
}

busybox_tree() {   # static busybox; /init installs its applet links at boot
    mkdir -p "$1"/{bin,sbin,dev,proc,sys,run,tmp,mnt,root,etc,lib/lab-modules}
    cp /bin/busybox "$1/bin/busybox"
}

# Copy MODULES (and what they depend on) from the lab kernel into ROOT, in load order.
add_modules() {
    local root=$1 kv ko; shift
    [ $# -gt 0 ] || return 0
    kv=$(kver)
    local deps; deps=$(for m in "$@"; do
        modprobe -d "$KDIR" -S "$kv" --show-depends "$m" || die "no module $m in kernel $kv"
    done) || exit 125
    mkdir -p "$root/lib/lab-modules"
    # "insmod PATH" lines, dependencies first; "builtin NAME" lines need nothing
    awk '$1 == "insmod" && !seen[$2]++ { print $2 }' <<< "$deps" | while IFS= read -r ko; do
        cp "$ko" "$root/lib/lab-modules/"
        echo "${ko##*/}" >> "$root/lib/lab-modules/order"
    done
}

# Copy a host executable and its shared libraries into ROOT at the same paths.
add_binary() {
    local root=$1 bin real lib
    bin=$(command -v "$2") || die "mkinitrd: $2 not found"
    real=$(realpath "$bin")
    for lib in "$real" $(ldd "$real" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root${lib%/*}"
        cp -L "$lib" "$root$lib"
    done
    if [ "$bin" != "$real" ] && [ ! -e "$root$bin" ]; then
        mkdir -p "$root${bin%/*}"
        ln -s "$real" "$root$bin"
    fi
}

pack() {   # pack ROOT: the tree as a newc archive on stdout
    (cd "$1" && find . -print0 | cpio --null -o -H newc --owner=0:0 --quiet)
}

# A newc archive on stdout holding one executable file NAME with the contents of the text
# file SRC (no NUL bytes), without a temporary tree; END=1 adds the trailer.
newc_file() {   # newc_file NAME SRC [END]
    local LC_ALL=C name=$1 data
    IFS= read -r -d '' data < "$2" || true
    newc_entry 1 $((0100755)) "$name" "$data"
    [ -z "${3:-}" ] || newc_entry 0 0 'TRAILER!!!' ''
}
newc_entry() {  # INO MODE NAME DATA; header+name and data are padded to 4 bytes
    local LC_ALL=C n=$((${#3} + 1)) pad=('' '\0' '\0\0' '\0\0\0')
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0%b%s%b' \
        "$1" "$2" 0 0 1 0 "${#4}" 0 0 0 0 "$n" 0 "$3" "${pad[(4 - (110 + n) % 4) % 4]}" \
        "$4" "${pad[(4 - ${#4} % 4) % 4]}"
}

# ------------------------------------------------------------------ setup
cmd_setup() {
    local p missing=()
    for p in $PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' || missing+=("$p")
    done
    mkdir -p "$LAB_DIR/runs"
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "setup: missing packages (${missing[*]}) and not root"
        say "installing ${missing[*]}"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                   --no-install-recommends "${missing[@]}"; } > "$LAB_DIR/apt.log" 2>&1; then
            tail -n 20 "$LAB_DIR/apt.log" >&2
            die "apt-get failed (log: $LAB_DIR/apt.log)"
        fi
    fi

    local pkg=${LAB_KERNEL_PKG:-}
    if [ -z "$pkg" ]; then
        pkg=$(kernel_pkg)
        if [ -z "$pkg" ]; then
            apt-get update -qq || true
            pkg=$(kernel_pkg)
        fi
    fi
    [ -n "$pkg" ] || die "setup: cannot resolve the package linux-image-amd64 depends on"
    local kv=${pkg#linux-image-}

    if [ "$(cat "$KDIR/KVER" 2>/dev/null)" != "$kv" ]; then
        say "fetching $pkg"
        local dl; dl=$(mktemp -d "$LAB_DIR/dl.XXXXXX")
        chown _apt "$dl" 2>/dev/null || true    # lets apt's sandbox user write there
        (cd "$dl" && apt-get download -qq "$pkg" 2>/dev/null) || die "apt-get download $pkg failed"
        rm -rf "$KDIR"
        mkdir -p "$KDIR"
        dpkg-deb -x "$dl/${pkg}"_*.deb "$KDIR" || die "cannot unpack $pkg"
        rm -rf "$dl"
        [ -s "$KDIR/boot/vmlinuz-$kv" ] || die "$pkg has no /boot/vmlinuz-$kv"
        depmod -b "$KDIR" "$kv"
        extract_vmlinux "$KDIR/boot/vmlinuz-$kv" "$KDIR/vmlinux" ||
            say "warning: no vmlinux extracted; L1 boots the bzImage (several seconds slower)"
        echo "$kv" > "$KDIR/KVER"        # written last: marks a complete kernel
    fi
    local f
    for f in "$L1_INITRD" "$L2_BASE"; do
        if [ ! -s "$f" ] || [ "$SELF" -nt "$f" ] || [ "$KDIR/KVER" -nt "$f" ] || [ /bin/busybox -nt "$f" ]; then
            build_l1_initrd
            build_l2_base
            break
        fi
    done
    say "setup done (kernel $kv, $LAB_DIR)"
}

# What L1's kernel said of its TSC and clocksources, and when kvm loaded (a
# guest's clock inherits all of it): one line for the run's stats.
l1_clock_facts() {
    tr -d '\r' < "$1" | awk '
        function t() { return substr($0, 2, index($0, "]") - 2) + 0 }
        /tsc: Detected [0-9.]+ MHz/ { d = $(NF - 2) " MHz" }
        /Refined TSC clocksource calibration/ { r = $(NF - 1) " MHz at " t() "s" }
        /kvm: / && !k { k = t() "s" }
        /Switched to clocksource|as unstable/ { sub(/^\[[^]]*\] /, ""); c = c (c ? "; " : "") $0 }
        END { printf "TSC detected %s, refined %s; kvm loaded at %s; %s\n",
                     d ? d : "n/a", r ? r : "never", k ? k : "n/a", c ? c : "no clocksource switch" }'
}

kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

# Uncompress the kernel payload of a bzImage (boot protocol >= 2.08: payload_offset at
# 0x248 and payload_length at 0x24c, relative to the protected-mode code, which starts
# after (setup_sects + 1) * 512 bytes; the payload ends with a 4-byte size).
extract_vmlinux() {
    local in=$1 out=$2 sects off len magic
    u32() { od -An -t u4 -j "$1" -N 4 "$in" | tr -d ' '; }
    sects=$(od -An -t u1 -j $((0x1f1)) -N 1 "$in" | tr -d ' ')
    [ "$sects" -ne 0 ] || sects=4
    off=$(( (sects + 1) * 512 + $(u32 $((0x248))) ))
    len=$(( $(u32 $((0x24c))) - 4 ))
    magic=$(od -An -t x1 -j "$off" -N 4 "$in" | tr -d ' ')
    local unz
    case $magic in
        fd377a58) unz=(xz -dc --single-stream) ;;
        1f8b08*)  unz=(gzip -dc) ;;
        28b52ffd) unz=(zstd -dcq) ;;
        *) say "unknown bzImage payload (magic $magic)"; return 1 ;;
    esac
    tail -c +$((off + 1)) "$in" | head -c "$len" | "${unz[@]}" > "$out" 2>/dev/null || true
    if [ "$(od -An -c -N 4 "$out" 2>/dev/null | tr -d ' ')" != '177ELF' ]; then
        rm -f "$out"
        return 1
    fi
}

build_l1_initrd() {
    local kv root
    kv=$(kver)
    new_tree root
    busybox_tree "$root"
    add_modules "$root" kvm-amd virtio_pci 9pnet_virtio 9p overlay
    printf "#!/bin/busybox sh\n%s\n%s\n%s\nKVER='%s'\nKDIR='%s'\nNINEP='%s'\n" \
        "$INIT_MOUNTS" "$L1_TSC_WAIT" "$INIT_MODULES" "$kv" "$KDIR" "$NINEP" > "$root/init"
    cat >> "$root/init" <<'EOF'
# Ferry lab, L1 stage 1: build the root (host / over 9p, read-only, under a tmpfs
# overlay), mount the per-run control share on /run/lab and hand over to its stage2.
fatal() { echo "lab-init: $*"; echo b > /proc/sysrq-trigger; sleep 60; }
mkdir -p /host /rw /new
mount -t 9p -o "$NINEP,ro,cache=loose" hostfs /host || fatal "cannot mount the host root"
mount -t tmpfs -o mode=755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /new ||
    fatal "cannot mount the root overlay"
R=/new
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
# devtmpfs lacks these: bash's process substitution needs /dev/fd
ln -sfn /proc/self/fd $R/dev/fd
ln -sfn /proc/self/fd/0 $R/dev/stdin
ln -sfn /proc/self/fd/1 $R/dev/stdout
ln -sfn /proc/self/fd/2 $R/dev/stderr
mount -t tmpfs -o mode=755 run $R/run
mkdir -p $R/run/lab
mount -t 9p -o "$NINEP" labctl $R/run/lab || fatal "cannot mount the control share"
# read-write shares, "TAG PATH" per line, parents first
while read -r tag path; do
    mkdir -p "$R$path" && mount -t 9p -o "$NINEP" "$tag" "$R$path" || echo "lab-init: cannot mount $path"
done < $R/run/lab/shares
# let modprobe inside L1 find the lab kernel's modules
mkdir -p $R/lib/modules
ln -sfn "$KDIR/lib/modules/$KVER" "$R/lib/modules/$KVER"
# static nodes (/dev/net/tun, /dev/vhost-net, ...): opening one autoloads its module
while read -r mod name dev; do
    case $mod in ""|"#"*) continue ;; esac
    type=${dev%"${dev#?}"} mm=${dev#?}
    case $name in */*) mkdir -p "$R/dev/${name%/*}" ;; esac
    [ -e "$R/dev/$name" ] || mknod -m 0600 "$R/dev/$name" "$type" "${mm%%:*}" "${mm#*:}"
done < "$R$KDIR/lib/modules/$KVER/modules.devname"
hostname ferry-lab
ip link set lo up
exec switch_root $R /bin/sh /run/lab/stage2
fatal "switch_root failed"
EOF
    chmod 755 "$root/init"
    pack "$root" > "$L1_INITRD.tmp"
    mv "$L1_INITRD.tmp" "$L1_INITRD"
}

# ------------------------------------------------------------------ mkinitrd (L2 guests)
build_l2_base() {
    local root
    new_tree root
    busybox_tree "$root"
    printf '#!/bin/busybox sh\n%s\nexec /bin/sh /init.user\n' "$INIT_HEAD" > "$root/init"
    chmod 755 "$root/init"
    pack "$root" > "$L2_BASE.tmp"
    mv "$L2_BASE.tmp" "$L2_BASE"
}

cmd_mkinitrd() {
    local mods=() bins=() m
    while [ $# -gt 0 ]; do
        case $1 in
            -m) IFS=, read -ra m <<< "$2"; mods+=("${m[@]}"); shift 2 ;;
            -b) bins+=("$2"); shift 2 ;;
            --) shift; break ;;
            -*) die "mkinitrd: unknown option $1" ;;
            *) break ;;
        esac
    done
    [ $# -eq 2 ] || die "usage: lab.sh mkinitrd [-m MOD[,MOD...]]... [-b BINARY]... OUT INIT"
    local out=$1 script=$2 extra="" b
    [ -r "$script" ] || die "mkinitrd: cannot read $script"
    [ -s "$L2_BASE" ] || die "no $L2_BASE; run: lab/lab.sh setup"
    if [ ${#mods[@]} -gt 0 ] || [ ${#bins[@]} -gt 0 ]; then
        new_tree extra
        add_modules "$extra" "${mods[@]}"
        for b in "${bins[@]}"; do add_binary "$extra" "$b"; done
    fi
    {
        cat "$L2_BASE"
        if [ -n "$extra" ]; then newc_file init.user "$script"; pack "$extra"
        else newc_file init.user "$script" end; fi
    } > "$out"
}

# ------------------------------------------------------------------ info
cmd_info() {
    local kv; kv=$(kver)
    pv() { printf "%s='%s'\n" "$1" "$2"; }   # (no value contains a quote)
    pv LAB_DIR "$LAB_DIR"
    pv KVER "$kv"
    pv VMLINUZ "$KDIR/boot/vmlinuz-$kv"     # bzImage: what ferry-vmm --kernel loads
    pv VMLINUX "$KDIR/vmlinux"              # uncompressed ELF (PVH entry), for QEMU
    pv MODULES "$KDIR/lib/modules/$kv"
    pv L1_INITRD "$L1_INITRD"
    pv L2_APPEND "$L2_APPEND"               # fast, quiet command line for L2 guests
}

# ------------------------------------------------------------------ run
stage2() {
    cat <<'EOF'
#!/bin/sh
# Ferry lab, L1 stage 2 (PID 1, in the overlay root): run the command, report its status.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb LANG=C.UTF-8
L=/run/lab
read -r up _ < /proc/uptime
echo "$up" > $L/heartbeat
echo "$up" > $L/started
# Tasks blocked for 30 s are reported on the console (a stuck 9p share shows up there).
echo 30 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null
# The heartbeat goes to the control share and, every 30 s, to the console: when the share
# stops but the console goes on, L1 is alive and 9p is what hangs.
( n=0; while sleep 5; do
    read -r up _ < /proc/uptime; echo "$up" > $L/heartbeat
    n=$((n + 1)); [ $((n % 6)) -ne 0 ] || echo "lab: heartbeat $up" > /dev/kmsg
  done ) &
bash $L/cmd > $L/stdout 2> $L/stderr < /dev/null
echo $? > $L/rc.tmp
read -r up _ < /proc/uptime
echo "$up" > $L/finished
mv $L/rc.tmp $L/rc
sync
echo b > /proc/sysrq-trigger
sleep 60
EOF
}

now() { echo "$EPOCHREALTIME"; }

# What L1's CPUs were doing, from QEMU's monitor (tells a guest-mode livelock from a halt).
monitor_cmd() {   # monitor_cmd RUNDIR CMD...: one command per argument, the output
    [ -S "$1/monitor.sock" ] || return 0
    local d=$1; shift
    printf '%s\n' "$@" | timeout 10 socat -t 5 - "UNIX-CONNECT:$d/monitor.sock" 2>&1
}
monitor_snapshot() {
    say "---- L1 CPU state (QEMU monitor) ----"
    monitor_cmd "$1" "info cpus" "info registers -a" |
        tr -d '\r' | grep -vE '^(\(qemu\)|QEMU |[XYZ]MM|FPR|FCW|DR[0-9]|GDT|IDT|LDT|TR |[DEFG]S )' | head -n 50 || true
}
qstatus() { if [ "$1" = killed ]; then echo "killed"; else echo "qemu status $1"; fi; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

cmd_run() {
    local timeout=3600 boot_timeout=120 hang_timeout=120 retries=1 smp=1 mem=2048
    local console="" stats="" keep="" shares=() envs=()
    while [ $# -gt 0 ]; do
        case $1 in
            -t|--timeout) timeout=$2; shift 2 ;;
            --boot-timeout) boot_timeout=$2; shift 2 ;;
            --hang-timeout) hang_timeout=$2; shift 2 ;;
            --retries) retries=$2; shift 2 ;;
            --smp) smp=$2; shift 2 ;;
            --mem) mem=$2; shift 2 ;;
            --share) shares+=("$(realpath "$2")"); shift 2 ;;
            -e|--env) envs+=("$2"); shift 2 ;;
            --console) console=1; shift ;;
            --stats) stats=1; shift ;;
            --keep) keep=1; shift ;;
            --) shift; break ;;
            -*) die "run: unknown option $1" ;;
            *) break ;;
        esac
    done
    [ $# -gt 0 ] || die "usage: lab.sh run [options] [--] CMD [ARG...]"
    if [ ! -s "$L1_INITRD" ] || [ ! -s "$KDIR/KVER" ]; then die "lab not set up; run: lab/lab.sh setup"; fi
    local kernel=$KDIR/vmlinux
    [ -s "$kernel" ] || kernel=$KDIR/boot/vmlinuz-$(kver)

    local cwd; cwd=$(pwd -P)
    [ "$cwd" = / ] || shares=("$cwd" "${shares[@]}")
    mkdir -p "$LAB_DIR/runs"
    # run directories kept by failed runs go after two days (never one still running)
    find "$LAB_DIR/runs" -mindepth 1 -maxdepth 1 -mmin +2880 -exec rm -rf {} + 2>/dev/null || true
    local d; d=$(mktemp -d "$LAB_DIR/runs/XXXXXX")
    stage2 > "$d/stage2"
    {
        printf 'cd -- %q || exit 125\n' "$cwd"
        printf 'export LAB_DIR=%q FERRY_LAB_L1=1\n' "$LAB_DIR"
        local e
        for e in "${envs[@]}"; do
            if [[ $e == *=* ]]; then printf 'export %q\n' "$e"
            elif [ -n "${!e+set}" ]; then printf 'export %s=%q\n' "$e" "${!e}"
            fi
        done
        printf 'exec'; printf ' %q' "$@"; echo
    } > "$d/cmd"

    local fsdev=(-virtfs "local,path=/,mount_tag=hostfs,security_model=none,readonly=on,multidevs=remap"
                 -virtfs "local,path=${d//,/,,},mount_tag=labctl,security_model=none,multidevs=remap")
    local i=0 s
    # parents before children, each once
    printf '%s\n' "${shares[@]}" | awk 'NF && !seen[$0]++ { print length($0), $0 }' |
        sort -n | cut -d' ' -f2- > "$d/shares.list"
    while IFS= read -r s; do
        [ -d "$s" ] || die "share $s is not a directory"
        fsdev+=(-virtfs "local,path=${s//,/,,},mount_tag=rw$i,security_model=none,multidevs=remap")
        echo "rw$i $s"
        i=$((i + 1))
    done < "$d/shares.list" > "$d/shares"
    local accel=tcg
    [ "$smp" -le 1 ] || accel=tcg,thread=multi
    # shellcheck disable=SC2054  # commas belong to QEMU option values
    local qemu=(qemu-system-x86_64 -nodefaults -no-user-config -accel "$accel"
                -cpu qemu64,+svm,+npt -smp "$smp" -m "$mem" -display none -monitor "unix:$d/monitor.sock,server=on,wait=off"
                -no-reboot -serial "file:$d/console.log"
                -kernel "$kernel" -initrd "$L1_INITRD" -append "$L1_APPEND ${LAB_L1_APPEND:-}"
                "${fsdev[@]}")

    local qpid="" tails=()
    # shellcheck disable=SC2317  # called from the trap
    stop() {
        [ -z "$qpid" ] || kill "$qpid" 2>/dev/null || true
        [ ${#tails[@]} -eq 0 ] || kill "${tails[@]}" 2>/dev/null || true
    }
    trap 'stop; exit 130' INT TERM HUP

    local t0 deadline attempt=0 rc="" booted="" hung="" qrc t_boot="" tb nmi_for="" stalls=0
    t0=$(now)
    deadline=$((SECONDS + timeout))
    while [ -z "$rc" ]; do
        attempt=$((attempt + 1))
        rm -f "$d"/{started,heartbeat,finished,rc,rc.tmp}
        : > "$d/stdout"; : > "$d/stderr"; : > "$d/console.log"
        local left=$((deadline - SECONDS))
        if [ "$left" -le 0 ]; then rc=124; break; fi
        timeout -k 5 "$left" "${qemu[@]}" 2> "$d/qemu.err" &
        qpid=$!
        tails=()
        tail -n +1 -s 0.2 -f --pid="$qpid" "$d/stdout" & tails+=($!)
        tail -n +1 -s 0.2 -f --pid="$qpid" "$d/stderr" >&2 & tails+=($!)
        if [ -n "$console" ]; then tail -n +1 -s 0.2 -f --pid="$qpid" "$d/console.log" >&2 & tails+=($!); fi
        booted="" hung="" qrc=0 tb=$(now) nmi_for=""
        local boot_limit=$((SECONDS + boot_timeout))
        while kill -0 "$qpid" 2>/dev/null; do
            if [ -z "$booted" ]; then
                if [ -e "$d/started" ]; then
                    booted=1
                    t_boot=$(secs "$(now)" "$tb")
                elif [ "$SECONDS" -ge "$boot_limit" ]; then
                    say "L1 did not reach userspace within ${boot_timeout}s (attempt $attempt)"
                    kill "$qpid" 2>/dev/null || true
                    qrc=killed
                    break
                fi
                sleep 0.1
            else
                local hb
                # An L1 found idle in HLT with a timer interrupt that never came (QEMU TCG
                # with nested SVM, seen after an L2 VM ends): an NMI wakes it, and the
                # kernel reprograms its timer. Once per stall, after 20 s of silence.
                if hb=$(stat -c %Y "$d/heartbeat" 2>/dev/null) && [ $(($(date +%s) - hb)) -ge 20 ] &&
                   [ "$hb" != "$nmi_for" ]; then
                    nmi_for=$hb
                    say "L1 silent for 20s: waking it with an NMI (QEMU monitor)"
                    monitor_cmd "$d" nmi > /dev/null
                    stalls=$((stalls + 1))
                fi
                if [ "$hang_timeout" -gt 0 ] && hb=$(stat -c %Y "$d/heartbeat" 2>/dev/null) &&
                   [ $(($(date +%s) - hb)) -ge "$hang_timeout" ]; then
                    say "L1 hung: no heartbeat for ${hang_timeout}s"
                    monitor_snapshot "$d" >&2
                    hung=1
                    kill "$qpid" 2>/dev/null || true
                    break
                fi
                sleep 1
            fi
        done
        if [ "$qrc" = killed ]; then wait "$qpid" || true; else wait "$qpid" || qrc=$?; fi
        qpid=""
        wait "${tails[@]}" 2>/dev/null || true
        tails=()
        if [ -s "$d/rc" ]; then
            rc=$(cat "$d/rc")
        elif [ -n "$hung" ]; then
            rc=125
        elif [ "$qrc" = 124 ] || [ "$SECONDS" -ge "$deadline" ]; then
            say "timeout: --timeout ${timeout}s expired"
            rc=124
        elif [ -z "$booted" ] && [ "$attempt" -le "$retries" ]; then
            say "L1 boot failed ($(qstatus "$qrc")); retrying"
        elif [ -z "$booted" ]; then
            say "L1 failed to boot ($(qstatus "$qrc"))"
            rc=125
        else
            say "L1 ended without a command status ($(qstatus "$qrc"))"
            rc=125
        fi
    done
    trap - INT TERM HUP

    if [ ! -s "$d/rc" ]; then
        say "---- L1 console (last 40 lines) ----"
        tail -n 40 "$d/console.log" | tr -d '\r' >&2 || true
        if [ -s "$d/qemu.err" ]; then
            say "---- qemu stderr ----"
            tail -n 20 "$d/qemu.err" >&2 || true
        fi
    fi
    if [ -n "$stats" ]; then
        local up="" fin="" run="n/a"
        [ -s "$d/started" ] && up=$(cat "$d/started")
        [ -s "$d/finished" ] && fin=$(cat "$d/finished")
        [ -z "$up" ] || [ -z "$fin" ] || run=$(secs "$fin" "$up")
        say "stats: L1 userspace after ${t_boot:-n/a}s (L1 uptime ${up:-n/a}s), command ${run}s," \
            "total $(secs "$(now)" "$t0")s, attempts $attempt, L1 stalls woken $stalls, status $rc"
        say "stats: L1 time: $(l1_clock_facts "$d/console.log")"
    fi
    if [ -n "$keep" ] || [ ! -s "$d/rc" ]; then say "run directory kept: $d"; else rm -rf "$d"; fi
    return "$rc"
}

main() {
    case ${1:-} in
        setup) shift; cmd_setup "$@" ;;
        run) shift; cmd_run "$@" ;;
        mkinitrd) shift; cmd_mkinitrd "$@" ;;
        info) cmd_info ;;
        *) sed -n '2,/^$/s/^# \{0,1\}//p' "$SELF" >&2; return 2 ;;
    esac
}
# on one line: bash has read all it needs even if this file changes while it runs
main "$@"; exit $?

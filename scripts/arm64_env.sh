# Sourced by scripts/test_arm64.sh: build (or reuse) an emulated aarch64 Debian userland.
#
# Why each step is the way it is:
# - qemu-user comes from bookworm-backports (qemu 10): bookworm's qemu 7.2 crashes as soon as
#   onnxruntime is imported (it shows the guest the host's x86 /proc/cpuinfo). The .deb is
#   fetched with a private apt sources list and unpacked with `dpkg -x` into the cache, so the
#   system's own qemu (if any) is left alone.
# - binfmt_misc gets one entry of our own ("prunedge-aarch64", flag F: the interpreter is opened
#   at registration, so the chroot needs no copy of qemu). It is removed again on exit.
# - debootstrap runs in one go (binfmt makes the arm64 second stage executable).
# - pip inside the userland needs this machine's pip configuration and CA bundle.

ARM64_CACHE=${ARM64_CACHE:-/var/cache/prunedge-arm64}
ARM64_SUITE=${ARM64_SUITE:-bookworm}
ARM64_MIRROR=${ARM64_MIRROR:-http://deb.debian.org/debian}
ARM64_QEMU_CPU=${ARM64_QEMU_CPU:-cortex-a72}   # the Raspberry Pi 4's core
ROOTFS="$ARM64_CACHE/rootfs"
QEMU_BIN="$ARM64_CACHE/qemu/usr/bin/qemu-aarch64"
BINFMT_DIR=/proc/sys/fs/binfmt_misc
BINFMT_NAME=prunedge-aarch64
_MOUNTS=()
_BINFMT_REGISTERED=0

log() { printf '[arm64 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

# Seconds since the epoch with milliseconds, for the timings in result.json.
now() { date +%s.%N | cut -c1-14; }

host_codename() {
  # shellcheck disable=SC1091
  (. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")
}

preflight() {
  [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, binfmt_misc)"
  [ "$(uname -m)" = x86_64 ] || log "host is $(uname -m), not x86_64: the x86 comparison is against this host"
  command -v apt-get >/dev/null || die "/etc/os-release: this script needs a Debian-family host with apt-get"
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get install -y -q debootstrap >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; } \
      || die "debootstrap: apt-get install failed"
  fi
  mkdir -p "$ARM64_CACHE"
}

# qemu-user >= 8 unpacked into the cache. On bookworm it comes from bookworm-backports;
# on a newer host its own suite already has a recent enough qemu.
fetch_qemu() {
  if [ -x "$QEMU_BIN" ]; then return 0; fi
  local codename suite apt_dir
  codename=$(host_codename)
  case "$codename" in
    bookworm) suite=bookworm-backports ;;
    bullseye) die "/etc/os-release: bullseye has no qemu >= 8; use a bookworm or newer host" ;;
    *) suite=$codename ;;
  esac
  apt_dir="$ARM64_CACHE/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
  echo "deb $ARM64_MIRROR $suite main" > "$apt_dir/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
              -o "APT::Sandbox::User=root")
  log "fetching qemu-user from $suite (private apt lists, system qemu untouched)"
  apt-get "${opts[@]}" update -q >/dev/null || die "$apt_dir/sources.list: apt-get update failed"
  (cd "$apt_dir/debs" && rm -f qemu-user_*.deb && apt-get "${opts[@]}" download -q "qemu-user/$suite" >/dev/null) \
    || die "qemu-user/$suite: apt-get download failed"
  safe_rm "$ARM64_CACHE/qemu.tmp" && dpkg -x "$apt_dir"/debs/qemu-user_*.deb "$ARM64_CACHE/qemu.tmp"
  [ -x "$ARM64_CACHE/qemu.tmp/usr/bin/qemu-aarch64" ] || die "qemu-user/$suite: no usr/bin/qemu-aarch64 in the package"
  safe_rm "$ARM64_CACHE/qemu" && mv "$ARM64_CACHE/qemu.tmp" "$ARM64_CACHE/qemu"
}

qemu_version() { "$QEMU_BIN" --version | head -1 | sed 's/.*version \([0-9.]*\).*/\1/'; }

register_binfmt() {
  if [ ! -e "$BINFMT_DIR/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BINFMT_DIR" \
      || die "$BINFMT_DIR: cannot mount binfmt_misc (needs a privileged host or container)"
  fi
  if [ -e "$BINFMT_DIR/$BINFMT_NAME" ]; then echo -1 > "$BINFMT_DIR/$BINFMT_NAME"; fi
  # ELF64 little-endian, e_machine = EM_AARCH64 (0xb7); the mask is the one qemu ships.
  local magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  local mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  echo ":$BINFMT_NAME:M::$magic:$mask:$QEMU_BIN:F" > "$BINFMT_DIR/register" \
    || die "$BINFMT_DIR/register: cannot register the aarch64 interpreter"
  _BINFMT_REGISTERED=1
}

unregister_binfmt() {
  if [ "$_BINFMT_REGISTERED" = 1 ] && [ -e "$BINFMT_DIR/$BINFMT_NAME" ]; then
    echo -1 > "$BINFMT_DIR/$BINFMT_NAME" || true
  fi
}

# Mount points under a directory, deepest first (from /proc/mounts; octal escapes kept).
_mounts_under() { awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r; }

# rm -rf that never follows a bind mount into /dev, /proc, /sys or the host's pip dirs.
safe_rm() {
  [ -e "$1" ] || return 0
  if [ -n "$(_mounts_under "$1")" ]; then die "$1: still has mounts inside; not deleting it"; fi
  rm -rf --one-file-system "$1"
}

# Mounts left by a run that was killed (we hold the cache lock, so nobody else uses them).
unmount_stale() {
  local m
  while read -r m; do [ -n "$m" ] && { umount "$m" 2>/dev/null || umount -l "$m"; }; done < <(_mounts_under "$ROOTFS")
}

build_rootfs() {
  if [ -e "$ROOTFS/.prunedge-ready" ]; then return 0; fi
  local tmp="$ARM64_CACHE/rootfs.tmp"
  unmount_stale
  safe_rm "$tmp"
  log "debootstrap arm64 $ARM64_SUITE into $ROOTFS (minbase + python3-venv)"
  if ! debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv \
        "$ARM64_SUITE" "$tmp" "$ARM64_MIRROR" > "$ARM64_CACHE/debootstrap.log" 2>&1; then
    tail -5 "$ARM64_CACHE/debootstrap.log" >&2
    die "$ARM64_CACHE/debootstrap.log: debootstrap failed"
  fi
  rm -rf "$tmp/var/cache/apt/archives"/*.deb
  touch "$tmp/.prunedge-ready"
  safe_rm "$ROOTFS" && mv "$tmp" "$ROOTFS"
}

_bind() {  # _bind SRC DST [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"
  _MOUNTS+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

# Local directories that the host's pip configuration names (find-links, file:// indexes;
# an index's .../simple pages link to ../../files, so its parent is what gets mounted).
_pip_local_dirs() {
  local conf
  for conf in /etc/pip.conf /etc/xdg/pip/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf"; do
    if [ -f "$conf" ]; then grep -hoE '(file://)?/[^ ,]+' "$conf" | sed 's#^file://##' | grep -vE '^/etc/' || true; fi
  done
  printf '%s\n' ${PIP_FIND_LINKS:-} ${PIP_EXTRA_INDEX_URL:-} | sed 's#^file://##' | grep '^/' || true
}

enter_rootfs() {
  unmount_stale
  cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
  local f d
  for f in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" /etc/ssl/certs/ca-certificates.crt; do
    [ -e "$f" ] || continue
    mkdir -p "$ROOTFS$(dirname "$f")"
    safe_rm "$ROOTFS$f" && cp -rL "$f" "$ROOTFS$f"
  done
  _bind /proc "$ROOTFS/proc"
  _bind /dev "$ROOTFS/dev"
  _bind /sys "$ROOTFS/sys" ro   # cpuinfo (onnxruntime, XNNPACK) reads the CPU lists there
  while read -r d; do
    if [ -d "$d" ] && ! mountpoint -q "$ROOTFS$d"; then _bind "$d" "$ROOTFS$d" ro; fi
  done < <(_pip_local_dirs | sed -E 's#/simple/?$##' | sort -u)
}

leave_rootfs() {
  local i
  for ((i = ${#_MOUNTS[@]} - 1; i >= 0; i--)); do umount "${_MOUNTS[$i]}" 2>/dev/null || umount -l "${_MOUNTS[$i]}" || true; done
  _MOUNTS=()
}

# in_arm64 CMD...: run a command in the userland with a clean environment.
in_arm64() {
  chroot "$ROOTFS" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin \
    QEMU_CPU="$ARM64_QEMU_CPU" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
    ${PIP_FIND_LINKS:+PIP_FIND_LINKS="$PIP_FIND_LINKS"} \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    "$@"
}

# arm64_venv REQUIREMENTS -> prints the venv path inside the userland (one per requirements hash).
arm64_venv() {
  local req=$1 key venv
  key=$(sha256sum "$req" | cut -c1-12)
  venv="/opt/prunedge/venv-$key"
  if [ ! -e "$ROOTFS$venv/.ready" ]; then
    safe_rm "$ROOTFS$venv"
    mkdir -p "$ROOTFS/opt/prunedge"
    cp "$req" "$ROOTFS/opt/prunedge/requirements-$key.txt"
    in_arm64 python3 -m venv "$venv" >&2 || die "$req: python3 -m venv failed in the arm64 userland"
    in_arm64 "$venv/bin/pip" install -q --no-compile --no-cache-dir -r "/opt/prunedge/requirements-$key.txt" >&2 \
      || die "$req: pip install failed in the arm64 userland"
    touch "$ROOTFS$venv/.ready"
  fi
  echo "$venv"
}

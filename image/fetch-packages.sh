#!/usr/bin/env bash
# Fetch and pin the Debian packages the image is built from: the cloud kernel and the
# systemd EFI stub, for each appliance architecture.
#
#   fetch-packages.sh fetch ARCH CACHE_DIR   download ARCH's pinned packages into CACHE_DIR
#                                            (kept across runs), verify each against the lock,
#                                            and write CACHE_DIR/resolved.lock: what was used
#   fetch-packages.sh lock                   re-resolve the newest versions Debian serves and
#                                            rewrite the lock file (what `make lock-packages` runs)
#
# The lock file (image/packages.lock) has one line per package:
#   ARCH  PACKAGE  VERSION  SHA256
# ARCH is the appliance architecture (aarch64, x86_64); the Debian architecture follows from it.
#
# When a pinned version is gone from the archive (Debian keeps only the current kernel ABI), a
# release build must not break on its own: fetch falls back to the newest version Debian serves,
# downloaded by apt (which checks each .deb against the hashes of the archive's signed index),
# says so loudly, and marks the package "fallback" in resolved.lock, which goes into the image.
# BASTION_PACKAGES_STRICT=1 refuses the fallback (for a reproducible release from the pin).
# `make lock-packages` moves the pin on purpose.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lock_file="${LOCK_FILE:-$here/packages.lock}"

die() { echo "fetch-packages: $*" >&2; exit 1; }

debian_arch() {
  case "$1" in
    aarch64) echo arm64 ;;
    x86_64) echo amd64 ;;
    *) die "unknown architecture '$1' (expected aarch64 or x86_64)" ;;
  esac
}

# Makes apt able to answer for Debian architecture $1: adds it as a foreign architecture and
# refreshes the package lists when they do not know it yet. Does nothing the second time.
ensure_apt_arch() {
  local darch="$1" probe="$2"
  if [ "$darch" != "$(dpkg --print-architecture)" ] &&
     ! dpkg --print-foreign-architectures | grep -qx "$darch"; then
    echo "fetch-packages: adding Debian architecture $darch" >&2
    dpkg --add-architecture "$darch"
    apt_updated=0
    apt_update_once
  elif ! apt-cache show "$probe:$darch" >/dev/null 2>&1; then
    apt_update_once
  fi
}

deb_name() { echo "${1}_${2//:/%3a}_${3}.deb"; }

apt_updated=0
apt_update_once() {
  [ "$apt_updated" = 1 ] && return 0
  apt-get update -qq
  apt_updated=1
}

# Downloads package $1 version $2 for Debian architecture $3 into directory $4 as deb_name;
# fails (status 1, apt's words on stderr) when the archive does not have it. Package lists older
# than the lock do not know the pinned version yet: refresh them once and retry first.
try_download() {
  local pkg="$1" version="$2" darch="$3" dir="$4" tmp
  tmp="$(mktemp -d "$dir/.download.XXXXXX")"
  chmod 755 "$tmp"   # apt-get download drops privileges to _apt, which must be able to write
  if ! (cd "$tmp" && apt-get download -qq "$pkg:$darch=$version" 2>"$tmp/log"); then
    if [ "$apt_updated" = 0 ]; then
      echo "fetch-packages: $pkg:$darch=$version not in the package lists; refreshing them" >&2
      apt_update_once
    fi
    if ! (cd "$tmp" && apt-get download -qq "$pkg:$darch=$version" 2>"$tmp/log"); then
      cat "$tmp/log" >&2
      rm -rf "$tmp"
      return 1
    fi
  fi
  local got=("$tmp"/*.deb)
  [ -f "${got[0]}" ] || { rm -rf "$tmp"; die "apt-get download left no .deb for $pkg:$darch=$version"; }
  mv "${got[0]}" "$dir/$(deb_name "$pkg" "$version" "$darch")"
  rm -rf "$tmp"
}

download() {
  try_download "$@" || die "cannot download $1:$3=$2"
}

# The package and version apt would install today in place of pinned package $1 (a versioned
# cloud kernel is replaced by the one the metapackage depends on now).
current_of() {
  local pkg="$1" darch="$2" current="$1" version
  case "$pkg" in
    linux-image-*-cloud-*)
      current="$(apt-cache depends "linux-image-cloud-$darch:$darch" |
                 sed -n "s/^ *Depends: \(linux-image-[0-9][^:]*-cloud-$darch\).*/\1/p" | head -n1)"
      [ -n "$current" ] || die "cannot resolve the kernel package behind linux-image-cloud-$darch" ;;
  esac
  version="$(apt-cache policy "$current:$darch" | sed -n 's/^ *Candidate: //p')"
  [ -n "$version" ] && [ "$version" != "(none)" ] || die "no candidate version for $current:$darch"
  echo "$current $version"
}

cmd_fetch() {
  local arch="$1" cache darch found=0
  darch="$(debian_arch "$arch")"
  [ -f "$lock_file" ] || die "$lock_file is missing; run 'make lock-packages'"
  mkdir -p "$2"
  cache="$(cd "$2" && pwd)"
  local resolved="$cache/resolved.lock.new"
  echo "# What this image is built from: the pin of image/packages.lock, or (fallback) the newest Debian served" > "$resolved"
  while read -r l_arch pkg version sha; do
    case "$l_arch" in ''|'#'*) continue ;; esac
    [ "$l_arch" = "$arch" ] || continue
    [ -n "$sha" ] || die "$lock_file: line for $pkg has no sha256"
    found=1
    local file="$cache/$(deb_name "$pkg" "$version" "$darch")"
    if [ -f "$file" ] && echo "$sha  $file" | sha256sum --check --status; then
      printf '%-8s %-34s %-20s %s pinned\n' "$arch" "$pkg" "$version" "$sha" >> "$resolved"
      continue   # cached and intact
    fi
    rm -f "$file"
    ensure_apt_arch "$darch" "$pkg"
    echo "fetch-packages: downloading $pkg:$darch $version" >&2
    if try_download "$pkg" "$version" "$darch" "$cache"; then
      if ! echo "$sha  $file" | sha256sum --check --status; then
        local actual; actual="$(sha256sum "$file" | cut -d' ' -f1)"
        rm -f "$file"
        die "$pkg:$darch $version: sha256 $actual does not match the lock ($sha); the archive changed or the lock is wrong"
      fi
      printf '%-8s %-34s %-20s %s pinned\n' "$arch" "$pkg" "$version" "$sha" >> "$resolved"
      continue
    fi
    [ "${BASTION_PACKAGES_STRICT:-0}" = 1 ] &&
      die "$pkg:$darch $version is gone from the Debian archive and BASTION_PACKAGES_STRICT=1 refuses the fallback; run 'make lock-packages' and commit image/packages.lock"
    local now now_pkg now_version now_file now_sha
    now="$(current_of "$pkg" "$darch")"; now_pkg="${now% *}"; now_version="${now#* }"
    now_file="$cache/$(deb_name "$now_pkg" "$now_version" "$darch")"
    [ -f "$now_file" ] || download "$now_pkg" "$now_version" "$darch" "$cache"
    now_sha="$(sha256sum "$now_file" | cut -d' ' -f1)"
    {
      echo "fetch-packages: ################################################################"
      echo "fetch-packages: WARNING: $pkg $version, pinned in image/packages.lock, is no longer in"
      echo "fetch-packages: the Debian archive. Building with the newest version Debian serves:"
      echo "fetch-packages:   $now_pkg $now_version (sha256 $now_sha, checked by apt against the"
      echo "fetch-packages:   archive's signed index). The image records it as a fallback."
      echo "fetch-packages: Run 'make lock-packages' and commit image/packages.lock to pin it."
      echo "fetch-packages: ################################################################"
    } >&2
    printf '%-8s %-34s %-20s %s fallback\n' "$arch" "$now_pkg" "$now_version" "$now_sha" >> "$resolved"
  done < "$lock_file"
  [ "$found" = 1 ] || die "$lock_file has no packages for $arch; run 'make lock-packages'"
  mv "$resolved" "$cache/resolved.lock"
}

# Resolves the versioned kernel package behind the cloud metapackage, and the stub package,
# at the versions apt would install today; downloads each once to record its sha256.
cmd_lock() {
  local work; work="$(mktemp -d)"
  trap "rm -rf '$work'" EXIT
  {
    echo "# Debian packages the bastion image is built from. Generated by 'make lock-packages'"
    echo "# (image/fetch-packages.sh lock); 'make kernel' verifies every download against it."
    echo "# ARCH    PACKAGE    VERSION    SHA256"
  } > "$work/lock"
  for arch in aarch64 x86_64; do
    local darch kernel; darch="$(debian_arch "$arch")"
    ensure_apt_arch "$darch" "linux-image-cloud-$darch"
    apt_update_once   # pin what Debian serves today, not what stale lists remember
    kernel="$(apt-cache depends "linux-image-cloud-$darch:$darch" |
              sed -n "s/^ *Depends: \(linux-image-[0-9][^:]*-cloud-$darch\).*/\1/p" | head -n1)"
    [ -n "$kernel" ] || die "cannot resolve the kernel package behind linux-image-cloud-$darch"
    for pkg in "$kernel" systemd-boot-efi; do
      local version sha
      version="$(apt-cache policy "$pkg:$darch" | sed -n 's/^ *Candidate: //p')"
      [ -n "$version" ] && [ "$version" != "(none)" ] || die "no candidate version for $pkg:$darch"
      download "$pkg" "$version" "$darch" "$work"
      sha="$(sha256sum "$work/$(deb_name "$pkg" "$version" "$darch")" | cut -d' ' -f1)"
      printf '%-8s %-34s %-20s %s\n' "$arch" "$pkg" "$version" "$sha" >> "$work/lock"
      echo "fetch-packages: $arch $pkg $version" >&2
    done
  done
  mv "$work/lock" "$lock_file"
}

case "${1:-}" in
  fetch) [ $# -eq 3 ] || die "usage: $0 fetch ARCH CACHE_DIR"; cmd_fetch "$2" "$3" ;;
  lock) cmd_lock ;;
  *) die "usage: $0 fetch ARCH CACHE_DIR | $0 lock" ;;
esac

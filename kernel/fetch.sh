#!/usr/bin/env bash
# Fetches the pinned kernel (kernel/kernel.lock) into CACHE (default
# .cache/kernel) and unpacks vmlinuz and the modules. Idempotent: a
# verified .deb in the cache is reused. Prints the unpacked root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. <(grep -E '^[a-z0-9]+=' "$here/kernel.lock")
cache=${CACHE:-$here/../.cache/kernel}
mkdir -p "$cache"
deb="$cache/${package}_${version}_amd64.deb"
check() { echo "$sha256  $1" | sha256sum -c --quiet - 2>/dev/null; }
if ! { [ -f "$deb" ] && check "$deb"; }; then
  rm -f "$deb"
  echo "kernel: downloading $package $version" >&2
  if ! (cd "$cache" && apt-get download -q "$package=$version" >&2); then
    apt-get update -q >&2 # a machine with stale package lists
    (cd "$cache" && apt-get download -q "$package=$version" >&2)
  fi
  got=$(ls "$cache"/"${package}"_*.deb | head -1)
  [ "$got" = "$deb" ] || mv "$got" "$deb"
  check "$deb" || { echo "kernel: SHA-256 of $deb does not match kernel.lock" >&2; rm -f "$deb"; exit 1; }
fi
root="$cache/root-$version"
if [ ! -f "$root/boot/vmlinuz-$release" ]; then
  rm -rf "$root.tmp"
  dpkg-deb -x "$deb" "$root.tmp"
  mv "$root.tmp" "$root"
fi
echo "$root"

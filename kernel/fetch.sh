#!/usr/bin/env bash
# Fetches the pinned kernel (kernel/kernel.lock) into CACHE (default
# .cache/kernel) and unpacks vmlinuz and the modules. Idempotent: a
# verified .deb in the cache is reused. Prints the unpacked root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. <(grep -E '^[a-z0-9]+=' "$here/kernel.lock")
cache=${CACHE:-$here/../.cache/kernel}
# shellcheck source=/dev/null
. "$here/../hack/apt-fetch.sh"
deb=$(fetch_pinned_deb "$cache" "$package" "$version" "$sha256")
root="$cache/root-$version"
if [ ! -f "$root/boot/vmlinuz-$release" ]; then
  rm -rf "$root.tmp"
  dpkg-deb -x "$deb" "$root.tmp"
  mv "$root.tmp" "$root"
fi
echo "$root"

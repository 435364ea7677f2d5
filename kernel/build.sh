#!/usr/bin/env bash
# Builds RigOS's own hardened kernel (make kernel): Debian's kernel source
# package, Debian's configuration from the pinned kernel package, plus
# kernel/hardened.config, with modules signed by RigOS's own module-signing
# key (KEYS/module-signing.pem, generated once, never committed). The
# result has the layout of an unpacked kernel package, so the imager takes
# it as -kernel. CI does not run this (about an hour on 2 cores); it is
# what GPU driver modules signed by RigOS need.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
SRC_PKG=${KERNEL_SOURCE_PACKAGE:-linux-source-6.1}
SRC_VERSION=${KERNEL_SOURCE_VERSION:-6.1.192-2}
SRC_SHA256=${KERNEL_SOURCE_SHA256:-ae95fe63d4c553f8d0e6c86cb1ab566f3894a43743eb19ab585cd97d82f26514}
KEYS=${KEYS:-$root/.cache/keys}
work=${KERNEL_BUILD_DIR:-$root/.cache/kernel-build}
out=${KERNEL_OUT:-$work/out}

sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
need=(build-essential bc bison flex libssl-dev libelf-dev dwarves kmod cpio rsync xz-utils openssl)
missing=(); for p in "${need[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] || $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"

mkdir -p "$work" "$KEYS"
deb="$work/${SRC_PKG}_${SRC_VERSION}_all.deb"
if ! echo "$SRC_SHA256  $deb" | sha256sum -c --quiet - 2>/dev/null; then
  (cd "$work" && apt-get download -q "$SRC_PKG=$SRC_VERSION")
  echo "$SRC_SHA256  $deb" | sha256sum -c --quiet - || { echo "kernel: $deb does not match its pinned SHA-256" >&2; exit 1; }
fi
src="$work/src"
if [ ! -f "$src/Makefile" ]; then
  rm -rf "$work/pkg" "$src"
  dpkg-deb -x "$deb" "$work/pkg"
  mkdir -p "$src"
  tar -C "$src" --strip-components=1 -xf "$work"/pkg/usr/src/linux-source-*.tar.xz
fi

# RigOS's module-signing key: the kernel wants key and certificate in one PEM.
signing="$KEYS/module-signing.pem"
if [ ! -f "$signing" ]; then
  openssl req -new -nodes -utf8 -sha512 -days 3650 -batch -x509 \
    -subj "/CN=RigOS module signing/" -newkey rsa:4096 -keyout "$signing" -out "$signing.crt" 2>/dev/null
  cat "$signing.crt" >> "$signing" && rm "$signing.crt"
  chmod 600 "$signing"
fi
mkdir -p "$src/certs" && cp "$signing" "$src/certs/rigos-module-signing.pem"

cd "$src"
debian_config=$(ls "$("$here/fetch.sh")"/boot/config-* | head -1)
cp "$debian_config" .config
scripts/kconfig/merge_config.sh -m .config "$here/hardened.config" >/dev/null
# Debian's key rings name files that are not in the source package.
scripts/config --set-str SYSTEM_TRUSTED_KEYS "" --set-str SYSTEM_REVOCATION_KEYS "" --set-str LOCALVERSION "-rigos"
make olddefconfig >/dev/null
# Every hardening choice must have survived olddefconfig.
while IFS='=' read -r key val; do
  case "$key" in ''|\#*) continue ;; esac
  if [ "$val" = n ]; then
    grep -q "^# $key is not set" .config || { echo "kernel: $key is still enabled" >&2; exit 1; }
  else
    grep -qx "$key=$val" .config || { echo "kernel: $key=$val did not take" >&2; exit 1; }
  fi
done < "$here/hardened.config"
make -j"$(nproc)" bzImage modules
rel=$(make -s kernelrelease)
rm -rf "$out" && mkdir -p "$out/boot"
cp arch/x86/boot/bzImage "$out/boot/vmlinuz-$rel"
cp .config "$out/boot/config-$rel"
make -s modules_install INSTALL_MOD_PATH="$out" INSTALL_MOD_STRIP=0 DEPMOD=/bin/true
echo "kernel: built $rel into $out (use: imager -kernel $out)" >&2
echo "$out"

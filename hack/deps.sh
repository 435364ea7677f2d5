#!/usr/bin/env bash
# Installs, idempotently, the Debian packages RigOS's build and tests need.
# Packages already present are not touched; apt-get runs only when one is
# missing. Needs root (or sudo) the first time on a fresh machine.
set -euo pipefail

pkgs=(
  build-essential   # cgo: the go-tpm-tools TPM simulator
  libssl-dev        # the simulator links OpenSSL
  protobuf-compiler # make generate
  git ca-certificates
  # the image and its VM tests
  binutils              # objcopy: UKI assembly
  erofs-utils           # mkfs.erofs: the system partition
  libseccomp-dev        # runc (static, with seccomp) in the image
  cryptsetup-bin        # veritysetup cross-checks our dm-verity trees in tests
  systemd-boot-efi      # systemd-stub
  qemu-system-x86 qemu-utils ovmf
  swtpm swtpm-tools
  python3 python3-cryptography  # virt-fw-vars (hack/virt-fw-vars.sh)
  sbsigntool            # sbverify cross-checks our signatures in tests
  cpio                  # cross-checks our initramfs writer in tests
  debootstrap xz-utils patch  # kernel/nvidia/build.sh: the module build chroot
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

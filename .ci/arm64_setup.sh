#!/usr/bin/env bash
# ARM64 under emulation (recipe from shared/PLATFORM.md): qemu-user, arm64 libc, the arm64 Deno
# from npm, and a sysroot whose /proc/cpuinfo describes an ARM CPU (onnxruntime reads it).
# Prints the two variables the ARM64 smoke test reads.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v qemu-aarch64-static >/dev/null || ! dpkg -s libstdc++6:arm64 >/dev/null 2>&1; then
  apt-get install -y -qq qemu-user-static binfmt-support >/dev/null
  dpkg --add-architecture arm64
  apt-get update -qq >/dev/null
  apt-get install -y -qq libc6:arm64 libstdc++6:arm64 libgcc-s1:arm64 >/dev/null
fi
work=${1:-$(mktemp -d)}
mkdir -p "$work/sysroot/proc"
if [[ ! -x "$work/package/deno" ]]; then
  (cd "$work" && npm pack --silent @deno/linux-arm64-glibc@2.9.5 >/dev/null && tar xzf deno-linux-arm64-glibc-2.9.5.tgz)
fi
for cpu in 0 1; do
  printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$cpu"
done > "$work/sysroot/proc/cpuinfo"
echo "OUTPOST_ARM64_DENO=$work/package/deno"
echo "OUTPOST_QEMU_SYSROOT=$work/sysroot"

#!/usr/bin/env bash
# Run on the GPU machine (Ubuntu 24.04, python3 with a pip torch holding LibTorch + CUDA + NCCL),
# from the repository root, with .debs/ carried there (made here by tools/device/fetch-debs.sh).
# Unpacks the Debian -dev packages into a prefix, keeps the machine's own shared libraries where
# it has the same soname, configures meson against the pip torch's LibTorch and builds build-gpu/.
#   usage: tools/device/build-gpu.sh [extra meson args]
set -euo pipefail
cd "$(dirname "$0")/../.."
P=${SKYRUN_DEPS_PREFIX:-/opt/skyrun-deps}
LIB=$P/usr/lib/x86_64-linux-gnu
if [[ ! -d $P/usr ]]; then
  mkdir -p "$P"
  for f in .debs/*.deb; do dpkg -x "$f" "$P"; done
  # Prefer the machine's libraries: replace each unpacked runtime library whose soname the system
  # already has by a link to the system's copy (Debian's may need other Debian-only libraries).
  for so in "$LIB"/lib*.so.*; do
    [[ -f $so && ! -L $so ]] || continue
    soname=$(objdump -p "$so" 2>/dev/null | awk '/SONAME/ {print $2}')
    [[ -n $soname ]] || continue
    if [[ -e /usr/lib/x86_64-linux-gnu/$soname && ! -e $LIB/$soname.keep ]]; then
      rm -f "$so"
      ln -sf "/usr/lib/x86_64-linux-gnu/$soname" "$LIB/$soname"
    fi
  done
  # Dangling -dev links (libfoo.so -> libfoo.so.4.1.2) now point at the soname link instead.
  for dev in "$LIB"/lib*.so; do
    if [[ -L $dev && ! -e $dev ]]; then
      base=$(basename "$dev")
      target=$(ls "$LIB/$base".* 2>/dev/null | head -n 1 || true)
      [[ -n $target ]] && ln -sf "$(basename "$target")" "$dev"
    fi
  done
fi
export PATH=$P/usr/bin:$PATH
export PKG_CONFIG=$P/usr/bin/pkgconf
export PKG_CONFIG_PATH=$LIB/pkgconfig:$P/usr/share/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$P
export LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# nvcc for our kernels (meson's cuda language finds it on PATH)
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH=$PATH:/usr/local/cuda/bin
TORCH_DIR=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
# The pip wheel's NCCL and CUDA runtime live in nvidia/* packages beside torch.
SITE=$(dirname "$TORCH_DIR")
for d in "$SITE"/nvidia/*/lib; do LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d; done
export LD_LIBRARY_PATH
if [[ ! -f build-gpu/build.ninja ]]; then
  meson setup build-gpu --buildtype=release -Dtorch_dir="$TORCH_DIR" -Dcuda=enabled \
    -Dshared_data="$PWD/.shared-data" "$@"
fi
ninja -C build-gpu
echo "export LD_LIBRARY_PATH=$LD_LIBRARY_PATH" > build-gpu/env.sh

#!/usr/bin/env bash
# Installs what is missing (Debian/Ubuntu, apt-get), then configures and builds skyrun with meson.
# Used by tools/run and tools/test; safe to run again (does nothing that is already done).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${SKYRUN_BUILD_DIR:-build}
PACKAGES=(
  g++ meson ninja-build pkg-config python3 git
  libluajit-5.1-dev libtorch-dev libssh-dev libcurl4-openssl-dev rapidjson-dev doctest-dev
  libpcre2-dev libutf8proc-dev libsnappy-dev libzstd-dev zlib1g-dev libedit-dev
  libgloo-dev  # Gloo's headers, for c10d's ProcessGroupGloo (Debian's libtorch-dev lacks them)
  # used by the test suite: real sshd, network namespaces, the npm reference tokenizers, a real
  # Slurm cluster (tests/lib/slurm.lua)
  openssh-server openssh-client iproute2 procps nodejs npm ca-certificates
  python3-jinja2  # the chat-template goldens (tools/chat_template_goldens.py): jinja2 as transformers uses it
  slurmctld slurmd slurm-client munge
  python3-botocore  # the EC2 stand-in checks requests against the real service model and signer
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A node/npm installed outside apt (nvm, tarballs) is as good as Debian's.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=()
  for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]}")
fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -f $BUILD_DIR/build.ninja ]]; then
  meson setup "$BUILD_DIR" --buildtype=debugoptimized "$@" >/dev/null
fi
ninja -C "$BUILD_DIR" >&2

#!/usr/bin/env bash
# Run HERE (Debian 12): downloads the Debian packages the GPU machine lacks into .debs/, which the
# device call then carries (`carry: [".debs"]`) for tools/device/build-gpu.sh to unpack.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .debs
cd .debs
pkgs=(
  libluajit-5.1-dev libluajit-5.1-2 libluajit-5.1-common
  libssh-dev libssh-4 libcurl4-openssl-dev libcurl4
  rapidjson-dev doctest-dev
  libedit-dev libedit2 libbsd0 libmd0
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
  libutf8proc-dev libutf8proc2 libsnappy-dev libsnappy1v5 libzstd-dev libzstd1 zlib1g-dev
  pkgconf pkgconf-bin libpkgconf3
)
apt-get download "${pkgs[@]}" >/dev/null
ls -1 | wc -l

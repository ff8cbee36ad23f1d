#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian packages hmk needs to build, test and benchmark.
# Idempotent: installs only what is missing, and does nothing when all is there.
set -euo pipefail

packages=(
    build-essential cmake ninja-build pkg-config clang clang-format
    libtomlplusplus-dev libcli11-dev libfmt-dev
    libgtest-dev libgmock-dev libbenchmark-dev libseccomp-dev
    flatbuffers-compiler libflatbuffers-dev libreadline-dev
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]}" >&2
    echo "install-deps: run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# Installs every Debian package thaw's build and tests need (Debian 12).
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config
  capnproto libcapnp-dev
  libspdlog-dev libfmt-dev libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
  libxxhash-dev liburing-dev libzstd-dev
  libgtest-dev
  libicu-dev
  libcaf-dev libssl-dev libucx-dev libboost-dev libboost-program-options-dev
  curl
  gnuplot-nox
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup: all ${#packages[@]} packages present"

#!/usr/bin/env bash
# Installs everything tcpha needs to build, test, demo and benchmark, from Debian's
# archive only. Idempotent: does nothing (and no apt-get update) when all is present.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config
  clang llvm libclang-rt-14-dev libbpf-dev bpftool linux-libc-dev libelf-dev zlib1g-dev
  libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev libre2-dev libsodium-dev
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
  jq curl wrk nginx-light haproxy iproute2 nftables ethtool procps psmisc chromium
  python3 python3-matplotlib python3-prometheus-client
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "deps: all ${#PKGS[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "deps: missing packages (need root to install): ${missing[*]}" >&2
  exit 2
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian's nginx package starts a service on install; policy-rc.d keeps it from
# grabbing port 80 on the host (tests run their own nginx inside namespaces).
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
echo "deps: done"

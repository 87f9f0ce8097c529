#!/usr/bin/env bash
# Installs the system tools the test-suite uses (tshark reads our pcaps; nft/curl/iproute2 for the
# kernel interop tests). Only acts where something is missing and we are root; never fails the build
# by itself: tests that need a missing tool report it.
set -u
need=()
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps: not root; missing: ${need[*]}" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || \
  echo "install-system-deps: apt-get failed for ${need[*]}" >&2
exit 0

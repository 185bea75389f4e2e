#!/usr/bin/env bash
# Install what tritrain needs, skipping whatever is already there, then the pinned Deno (npm ci).
# Debian/Ubuntu: system packages through apt-get (as root, or through sudo). Elsewhere: Node.js
# with npm must be installed first; the rest is reported, not installed.
#   ./setup.sh && node_modules/deno/deno task train
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive

say() { echo "setup: $*"; }

need=()
# Node.js + npm only fetch the Deno binary (npm ci); Node 20 from NodeSource ships its own npm,
# and Debian's npm package conflicts with it, so install both from Debian only when npm is missing.
if ! command -v npm >/dev/null 2>&1; then
  if command -v node >/dev/null 2>&1; then need+=(npm); else need+=(nodejs npm); fi
fi
if [ "$(uname -s)" = Linux ]; then
  # The Vulkan loader plus a driver: a GPU's own, or Mesa's lavapipe on the CPU as the fallback.
  # (No `ldconfig | grep -q` or `ls A B`: under pipefail an early grep exit or one missing folder
  # would read as "not installed".)
  [[ "$(ldconfig -p 2>/dev/null)" == *libvulkan.so.1* ]] || need+=(libvulkan1)
  compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null ||
    compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null || need+=(mesa-vulkan-drivers)
  # The default preset's data.
  [ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
  # MPI for `train --distributed` (mpiexec and libmpich.so.12, MPICH's ABI) and its tests.
  command -v mpiexec >/dev/null 2>&1 || need+=(mpich)
fi

if [ ${#need[@]} -eq 0 ]; then
  say "system packages already present"
elif command -v apt-get >/dev/null 2>&1; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "need ${need[*]}: run this as root (no sudo here)"; exit 1; }
    sudo=(sudo)
  fi
  say "installing ${need[*]}"
  "${sudo[@]}" apt-get update -qq
  if ! "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null; then
    say "apt-get install ${need[*]} failed"
    [[ " ${need[*]} " == *" npm "* ]] && command -v node >/dev/null 2>&1 &&
      say "node is installed ($(command -v node)) without npm: install npm from where Node came from"
    exit 1
  fi
else
  say "no apt-get here: install ${need[*]} (or their equivalents) yourself, then run this again"
  command -v npm >/dev/null 2>&1 || exit 1
fi

# npm ci reads lockfileVersion 3 (npm 7 or newer); its only script is deno's postinstall.
npm_major=$(npm --version | cut -d. -f1)
if [ "$npm_major" -lt 7 ]; then
  say "npm $(npm --version) is too old: npm ci needs npm 7 or newer (Node.js 16 or newer)"
  exit 1
fi

# Skip npm ci when node_modules is already what the lockfile says (npm's own hidden lockfile is
# newer than package.json and package-lock.json, and the pinned Deno binary is there).
hidden=node_modules/.package-lock.json
if [ -x node_modules/deno/deno ] && [ -f "$hidden" ] &&
  [ "$hidden" -nt package-lock.json ] && [ "$hidden" -nt package.json ]; then
  say "node_modules up to date ($(node_modules/deno/deno --version | head -1))"
else
  say "npm ci (the pinned Deno and the npm packages)"
  npm ci --no-audit --no-fund
fi

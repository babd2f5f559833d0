#!/usr/bin/env bash
# Quick start: build Keyway and run it in front of a local Redis HA lab
# (a master and two replicas on loopback), printing the endpoint to use.
#
# On a fresh Debian machine, run as root to have redis-server installed through
# apt; otherwise the script says what to install. Needs Rust >= 1.95 (cargo).
# Stop with Ctrl-C: every process it started is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "quickstart: installing redis-server, redis-sentinel and redis-tools with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y redis-server redis-sentinel redis-tools
  else
    echo "quickstart: redis-server is missing; install it with:" >&2
    echo "  sudo apt-get install -y redis-server redis-sentinel redis-tools" >&2
    exit 1
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "quickstart: cargo is missing; install Rust 1.95 or newer (https://rustup.rs)" >&2
  exit 1
fi

cargo build --release --locked -p keyway
exec target/release/keyway lab "$@"

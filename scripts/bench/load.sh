#!/usr/bin/env bash
# The load, idle-memory and scale benchmark: direct Redis, HAProxy, Keyway and
# the epoll floor side by side on 127.0.0.1 (benches/src/bin/load.rs says what
# it measures).
# Needs redis-server, redis-benchmark and haproxy:
#   apt-get install -y redis-server redis-tools haproxy
# Usage: scripts/bench/load.sh [--rounds N] [--quick] [--no-memory] [--no-scale]
#                              [--keyway-workers N]
# Prints a Markdown report; a copy goes to target/bench/load-<time>.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

# 10,000 idle sessions need ~20,000 descriptors in each proxy and in Redis;
# every process started below inherits this limit.
ulimit -n 100000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --locked -p keyway --bin keyway -p keyway-benches --bin load --bin floor
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
mkdir -p "$target_dir/bench"
out="$target_dir/bench/load-$(date +%Y%m%d-%H%M%S).md"
"$target_dir/release/load" "$@" | tee "$out"
echo "report: $out" >&2

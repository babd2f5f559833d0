#!/usr/bin/env bash
# The failover benchmark: HAProxy 2.6 and Keyway side by side in front of one
# Redis group with Sentinel (1 master, 2 replicas, 3 sentinels, down-after
# 1000 ms), through kill -9, SIGSTOP, SENTINEL FAILOVER, a restarted old master
# and a total outage, all on 127.0.0.1 (scenario letters: a kill -9, b SIGSTOP,
# f SIGSTOP with a late SIGCONT, c SENTINEL FAILOVER, d old master restarted,
# e no master). benches/src/bin/failover.rs says what
# it measures; docs/failover.md has the method and the results.
# Needs redis-server, redis-sentinel and haproxy:
#   apt-get install -y redis-server redis-sentinel redis-tools haproxy
# Usage: scripts/bench/failover.sh [--runs N] [--scenarios abfcde] [--outage-ms MS]
#                                  [--no-keyway-default] [--out DIR]
# Prints a Markdown report; a copy goes to target/bench/failover-<time>.md, and
# each run's proxy logs and timeline to target/bench/failover-<time>/.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --locked -p keyway --bin keyway -p keyway-benches --bin failover
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
stamp="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$target_dir/bench"
out="$target_dir/bench/failover-$stamp.md"
args=("$@")
if [[ " $* " != *" --out "* ]]; then
  args+=(--out "$target_dir/bench/failover-$stamp")
fi
"$target_dir/release/failover" "${args[@]}" | tee "$out"
echo "report: $out" >&2

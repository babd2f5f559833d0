#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration tests.
# Integration tests start real redis-server processes on free loopback ports
# (install: apt-get install -y redis-server redis-sentinel redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doc tests.
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

echo "== deployment checks (shellcheck, systemd, ansible, hcloud, end-to-end, failover, examples)"
scripts/ci/deploy_checks.sh

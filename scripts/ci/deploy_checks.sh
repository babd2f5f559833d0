#!/usr/bin/env bash
# Every deployment check, in order; exits non-zero on the first failure, with a
# summary of the time each check took. Bounded: each check has a time limit
# (KEYWAY_CHECK_TIMEOUT, default 300 s). About 1 minute on a 2-core machine
# with the venv and the keyway binary already there; add about a minute for the
# first pip install. Ends with "deploy: N passed, N failed".
#
#   1. shellcheck   scripts/ci/shellcheck_all.sh   (every shell script in scripts/, deploy/)
#   2. systemd      scripts/ci/systemd_verify.sh   (systemd-analyze verify, no warning)
#   3. ansible      scripts/ci/ansible_check.sh    (lint, syntax, role applied to localhost)
#   4. hcloud       scripts/ci/hcloud_fake_test.sh (load-balancer script vs a fake hcloud)
#   5. end-to-end   scripts/ci/end_to_end_lab.sh   (redis_ha_end_to_end.sh against a lab)
#   6. failover     scripts/failover_test.sh in lab mode (switchover <= 10 s)
#   7. failover-remote scripts/ci/failover_remote_fake.sh (remote mode, a fake ssh, a lab)
#   8. python       scripts/ci/python_example.sh   (examples/python/app.py through a lab)
#
# Installs what is missing (shellcheck, systemd, jq with apt; ansible and
# redis-py from PyPI into a venv). Builds keyway once (debug; a no-op after
# scripts/test.sh) unless KEYWAY_BIN names a binary. Run from anywhere:
#   scripts/ci/deploy_checks.sh
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

LIMIT="${KEYWAY_CHECK_TIMEOUT:-300}"
STARTED=$SECONDS
SUMMARY=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/keyway-deploy-checks.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# check NAME CMD...: runs one check with a time limit, records its duration.
check() {
  local name="$1" t0=$SECONDS status=0
  shift
  printf '\n######## deploy check: %s\n' "$name"
  timeout --kill-after=10 "$LIMIT" "$@" || status=$?
  if [ "$status" -ne 0 ]; then
    [ "$status" -ne 124 ] || printf 'deploy check %s: timed out after %s s\n' "$name" "$LIMIT" >&2
    SUMMARY+=("FAIL  $name ($((SECONDS - t0)) s)")
    printf '%s\n' "${SUMMARY[@]}" >&2
    printf 'deploy: %s passed, 1 failed\n' "$((${#SUMMARY[@]} - 1))"
    die "deploy check '$name' failed (exit $status)"
  fi
  SUMMARY+=("ok    $name ($((SECONDS - t0)) s)")
}

apt_install shellcheck:shellcheck jq:jq redis-cli:redis-tools redis-server:redis-server
# One private copy for every check: a rebuild of target/ meanwhile changes nothing.
mkdir -p "$WORK/bin"
cp "$(keyway_bin)" "$WORK/bin/keyway"
KEYWAY_BIN="$WORK/bin/keyway"
export KEYWAY_BIN
note "keyway: $KEYWAY_BIN ($("$KEYWAY_BIN" --version))"

check shellcheck scripts/ci/shellcheck_all.sh
check systemd scripts/ci/systemd_verify.sh
check ansible scripts/ci/ansible_check.sh
check hcloud scripts/ci/hcloud_fake_test.sh
check end-to-end scripts/ci/end_to_end_lab.sh
check failover scripts/failover_test.sh --keyway "$KEYWAY_BIN" --log-dir "$WORK/failover"
check failover-remote scripts/ci/failover_remote_fake.sh
check python scripts/ci/python_example.sh

printf '\n######## deploy checks: all passed in %s s\n' "$((SECONDS - STARTED))"
printf '%s\n' "${SUMMARY[@]}"
printf 'deploy: %s passed, 0 failed\n' "${#SUMMARY[@]}"

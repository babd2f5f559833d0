#!/usr/bin/env bash
# CI check of examples/python/app.py (redis-py) through Keyway: against the
# endpoint in the environment (REDIS_URL, or REDIS_HOST + REDIS_PORT +
# REDIS_PASSWORD_FILE), else against a `keyway lab --env-file` it starts and
# stops. Both configuration forms of the example are run (host/port + password
# file, then REDIS_URL), then 150 writes while the lab's master is stopped
# (the documented retry settings must ride through: 0 failed writes); the
# other examples are checked for syntax (the
# docker-compose and Kubernetes YAML files, and the Node.js file when node is
# installed). Installs redis-py (pinned, scripts/ci/requirements.txt) into the
# CI venv when missing.
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh
source "$(dirname "$0")/lib.sh"

ci_venv
python3 -c 'import redis; print("redis-py", redis.__version__)'
APP="$REPO_ROOT/examples/python/app.py"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/keyway-python.XXXXXX")"
trap 'stop_lab; rm -rf "$WORK"' EXIT

section "examples: syntax"
python3 - "$REPO_ROOT/examples" <<'PY'
import pathlib, sys, yaml
root = pathlib.Path(sys.argv[1])
files = sorted(root.glob("docker-compose/*.yml")) + sorted(root.glob("kubernetes/*.yaml"))
assert files, "no example YAML files"
for path in files:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path}: empty"
    print(f"ok  {path.relative_to(root)}: {len(docs)} document(s)")
PY
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$APP" && echo "ok  python/app.py parses"
if command -v node >/dev/null 2>&1; then
  node --check "$REPO_ROOT/examples/nodejs/app.js" && echo "ok  nodejs/app.js: node --check"
else
  note "node not installed: examples/nodejs/app.js not checked"
fi

# run_app LOG VAR=VALUE... [-- APP-ARGS...]: the example with only the given
# Redis variables set.
run_app() {
  local log="$1" vars=()
  shift
  while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
    vars+=("$1")
    shift
  done
  [ "$#" -eq 0 ] || shift
  env -u REDIS_URL -u REDIS_HOST -u REDIS_PORT -u REDIS_PASSWORD_FILE -u REDIS_DB -u REDIS_USERNAME \
    "${vars[@]}" python3 "$APP" "$@" >"$log" 2>&1 || {
    cat "$log"
    die "examples/python/app.py failed"
  }
  cat "$log"
  [ "$(tail -n 1 "$log")" = OK ] || die "examples/python/app.py did not print OK"
}

if [ -n "${REDIS_URL:-}" ]; then
  section "examples/python/app.py against REDIS_URL (from the environment)"
  run_app "$WORK/url.log" REDIS_URL="$REDIS_URL"
elif [ -n "${REDIS_HOST:-}" ]; then
  section "examples/python/app.py against $REDIS_HOST:${REDIS_PORT:-6379} (from the environment)"
  run_app "$WORK/host.log" REDIS_HOST="$REDIS_HOST" REDIS_PORT="${REDIS_PORT:-6379}" \
    ${REDIS_PASSWORD_FILE:+REDIS_PASSWORD_FILE="$REDIS_PASSWORD_FILE"}
else
  section "keyway lab"
  start_lab "$WORK/lab"
  section "examples/python/app.py with REDIS_HOST, REDIS_PORT, REDIS_PASSWORD_FILE"
  run_app "$WORK/host.log" REDIS_HOST=127.0.0.1 REDIS_PORT="$KEYWAY_LAB_PORT" \
    REDIS_PASSWORD_FILE="$KEYWAY_LAB_PASSWORD_FILE"
  section "examples/python/app.py with REDIS_URL, 40 writes"
  # The URL holds the password: built here, passed through the environment only.
  url="redis://:$(head -n 1 "$KEYWAY_LAB_PASSWORD_FILE")@127.0.0.1:$KEYWAY_LAB_PORT/0"
  run_app "$WORK/url.log" REDIS_URL="$url" -- --writes 40 --interval 0.01
  section "examples/python/app.py rides through a failover (master stopped mid-run)"
  run_app "$WORK/failover.log" REDIS_HOST=127.0.0.1 REDIS_PORT="$KEYWAY_LAB_PORT" \
    REDIS_PASSWORD_FILE="$KEYWAY_LAB_PASSWORD_FILE" -- --writes 150 --interval 0.05 &
  app=$!
  sleep 2
  note "stopping the master $KEYWAY_LAB_MASTER (SHUTDOWN NOSAVE)"
  REDISCLI_AUTH="$(head -n 1 "$KEYWAY_LAB_PASSWORD_FILE")" redis-cli --no-auth-warning \
    -h "${KEYWAY_LAB_MASTER%:*}" -p "${KEYWAY_LAB_MASTER##*:}" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$app" || die "the example failed during the failover"
  grep -q ', 0 failed,' "$WORK/failover.log" || die "writes failed during the failover"
  grep -qE "writes, .*master tcp_port=${KEYWAY_LAB_MASTER##*:}\$" "$WORK/failover.log" &&
    die "the writes ended on the old master: the failover did not happen during them"
  note "ok  0 failed writes across the failover"
fi
section "OK"

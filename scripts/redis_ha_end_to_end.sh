#!/usr/bin/env bash
# End-to-end check of the Redis HA endpoint (the load balancer, or one Keyway
# node): PING/PONG, SET/GET/DEL of a unique key, INFO replication (role:master
# and enough connected replicas). Every step goes to a timestamped log file.
# Prints OK and exits 0 only when every step passes; otherwise prints one
# FAIL line naming the step and exits 1.
#
#   scripts/redis_ha_end_to_end.sh [options] [HOST] [PORT]      (default 10.0.0.10 6379)
#
#   --password-file FILE  read the password from FILE (one line); otherwise
#                         REDISCLI_AUTH from the environment is used, if set.
#                         The password is never put on a command line (ps shows
#                         those): redis-cli reads it from REDISCLI_AUTH.
#   --user NAME           ACL user (redis-cli --user; the password stays in
#                         REDISCLI_AUTH)
#   --db N                database number (default 0)
#   --min-replicas N      fail when the master has fewer connected replicas (default 1)
#   --timeout S           bound on each redis-cli call, in seconds (default 3)
#   --log FILE            log file (default: $KEYWAY_E2E_LOG_DIR or /tmp/keyway-e2e,
#                         redis_ha_end_to_end-<UTC timestamp>-<pid>.log)
#   --quiet               print only the final OK / FAIL line
#
# Needs redis-cli (apt-get install -y redis-tools) and coreutils' timeout.
set -euo pipefail

PROG="$(basename "$0")"
HOST=10.0.0.10
PORT=6379
PASSWORD_FILE=""
REDIS_USER=""
DB=0
MIN_REPLICAS=1
TIMEOUT=3
LOG=""
QUIET=false

usage() { sed -n '2,24s/^# \{0,1\}//p' "$0"; }
fail_usage() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 2
}

positional=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --password-file) PASSWORD_FILE="${2:?--password-file needs a file}"; shift 2 ;;
    --user) REDIS_USER="${2:?--user needs a name}"; shift 2 ;;
    --db) DB="${2:?}"; shift 2 ;;
    --min-replicas) MIN_REPLICAS="${2:?}"; shift 2 ;;
    --timeout) TIMEOUT="${2:?}"; shift 2 ;;
    --log) LOG="${2:?--log needs a file}"; shift 2 ;;
    --quiet) QUIET=true; shift ;;
    -h | --help) usage; exit 0 ;;
    --password | -a) fail_usage "passwords are never taken on the command line: use REDISCLI_AUTH or --password-file" ;;
    -*) fail_usage "unknown option $1 (see --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ "${#positional[@]}" -le 2 ] || fail_usage "too many arguments (HOST PORT at most)"
HOST="${positional[0]:-$HOST}"
PORT="${positional[1]:-$PORT}"
[[ "$PORT" =~ ^[0-9]+$ ]] || fail_usage "PORT must be a number, not '$PORT'"
[[ "$MIN_REPLICAS" =~ ^[0-9]+$ ]] || fail_usage "--min-replicas must be a number"
[[ "$DB" =~ ^[0-9]+$ ]] || fail_usage "--db must be a number"

command -v redis-cli >/dev/null 2>&1 || fail_usage "redis-cli not found: apt-get install -y redis-tools"

if [ -n "$PASSWORD_FILE" ]; then
  [ -r "$PASSWORD_FILE" ] || fail_usage "cannot read password file $PASSWORD_FILE"
  # One line; $(...) drops the trailing newline. Exported for redis-cli only.
  REDISCLI_AUTH="$(head -n 1 "$PASSWORD_FILE" | tr -d '\r')"
  export REDISCLI_AUTH
fi

if [ -z "$LOG" ]; then
  log_dir="${KEYWAY_E2E_LOG_DIR:-/tmp/keyway-e2e}"
  LOG="$log_dir/redis_ha_end_to_end-$(date -u +%Y%m%dT%H%M%SZ)-$$.log"
fi
mkdir -p "$(dirname "$LOG")"
: >>"$LOG" || fail_usage "cannot write the log file $LOG"

now_ms() { date +%s%3N; }
log() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$*" >>"$LOG"; }
say() { [ "$QUIET" = true ] || printf '%s\n' "$*"; }

cli_args=(--no-auth-warning -h "$HOST" -p "$PORT" -n "$DB")
[ -z "$REDIS_USER" ] || cli_args+=(--user "$REDIS_USER")
# cli CMD...: one redis-cli call, bounded; its output (stdout+stderr, \r removed).
cli() {
  timeout --kill-after=1 "$TIMEOUT" redis-cli "${cli_args[@]}" "$@" 2>&1 | tr -d '\r'
}

fail() {
  log "FAIL $*"
  printf 'FAIL: %s (log: %s)\n' "$*" "$LOG"
  exit 1
}

auth_note="none"
[ -z "${REDISCLI_AUTH:-}" ] || auth_note="REDISCLI_AUTH${PASSWORD_FILE:+ from $PASSWORD_FILE}"
log "START endpoint=$HOST:$PORT db=$DB auth=$auth_note${REDIS_USER:+ user=$REDIS_USER} min_replicas=$MIN_REPLICAS timeout=${TIMEOUT}s"
say "endpoint $HOST:$PORT (log: $LOG)"

# step NAME EXPECTED CMD...: runs CMD, logs its answer and duration, fails
# unless the answer is exactly EXPECTED.
step() {
  local name="$1" expected="$2" t0 out ms
  shift 2
  t0="$(now_ms)"
  out="$(cli "$@")" || true
  ms=$(($(now_ms) - t0))
  log "STEP $name: $* -> $(printf '%s' "$out" | head -c 200 | tr '\n' ' ') (${ms} ms)"
  if [ "$out" != "$expected" ]; then
    fail "$name: expected '$expected', got '$(printf '%s' "$out" | head -n 1)'"
  fi
  say "ok  $name (${ms} ms)"
}

KEY="keyway:e2e:$(hostname -s 2>/dev/null || echo host):$$:$(date +%s%N)"
VALUE="v-$RANDOM$RANDOM-$(date +%s%N)"
T0="$(now_ms)"

step PING PONG PING
step SET OK SET "$KEY" "$VALUE" EX 60
step GET "$VALUE" GET "$KEY"
step DEL 1 DEL "$KEY"

t0="$(now_ms)"
info="$(cli INFO replication)" || true
ms=$(($(now_ms) - t0))
log "STEP INFO replication (${ms} ms):"
printf '%s\n' "$info" | sed 's/^/    /' >>"$LOG"
role="$(printf '%s\n' "$info" | sed -n 's/^role://p')"
replicas="$(printf '%s\n' "$info" | sed -n 's/^connected_slaves://p')"
[ "$role" = master ] || fail "INFO replication: expected role:master, got role:${role:-<none>} ($(printf '%s' "$info" | head -n 1))"
[[ "$replicas" =~ ^[0-9]+$ ]] || fail "INFO replication: no connected_slaves line"
[ "$replicas" -ge "$MIN_REPLICAS" ] || fail "INFO replication: $replicas connected replica(s), expected at least $MIN_REPLICAS"
say "ok  INFO replication: role:master, $replicas connected replica(s) (${ms} ms)"

# Which server answered (for the log and for failover reports).
server="$(cli INFO server | sed -n 's/^\(run_id\|tcp_port\|redis_version\):/\1=/p' | tr '\n' ' ')" || true
log "MASTER ${server:-unknown}"

log "OK all steps passed in $(($(now_ms) - T0)) ms"
echo OK

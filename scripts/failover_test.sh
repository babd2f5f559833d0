#!/usr/bin/env bash
# Failover test: stop the Redis master while the end-to-end check
# (scripts/redis_ha_end_to_end.sh) runs in a loop through Keyway, measure how
# long the endpoint was unavailable, report the new master, and fail when the
# switchover takes longer than --max-seconds (10 s, the epic's acceptance).
#
# Lab mode (default): starts `keyway lab --env-file` (master, replicas and
# sentinels on 127.0.0.1, Keyway in front) and stops the master with
# `redis-cli SHUTDOWN NOSAVE`, the equivalent of `systemctl stop redis-server`.
# Everything the script started is stopped on exit.
#
#   scripts/failover_test.sh [--keyway PATH] [--replicas N]
#
# Remote mode: real hosts; stops the master over ssh with
# `sudo systemctl stop redis-server` (the ssh user needs that sudo right).
#
#   REDISCLI_AUTH=... scripts/failover_test.sh --proxy 10.0.0.10:6379 --master-ssh redis-01
#   scripts/failover_test.sh --proxy 10.0.0.10:6379 --master-ssh redis-01 --password-file ~/.redis.pw
#
# Options (both modes):
#   --max-seconds S      fail when kill -> first good check again exceeds S (default 10)
#   --settle-seconds S   give up waiting for a good check after S (default 30)
#   --interval S         pause between two checks (default 0.1)
#   --log-dir DIR        logs (default /tmp/keyway-failover/<UTC timestamp>)
# Remote mode only:
#   --proxy HOST:PORT    the endpoint (the load balancer or one Keyway node)
#   --master-ssh HOST    ssh destination of the current master
#   --stop-command CMD   run on the master instead of `sudo systemctl stop redis-server`
#   --password-file F    the endpoint's password (else REDISCLI_AUTH)
#   --restart-old-master start redis-server again on the old master at the end
#                        (it rejoins as a replica through Sentinel)
#
# Measured, from the loop's results (one line per check: start, end, result):
#   kill -> recovery:    from the stop command to the end of the first good
#                        check that started after it (the epic's switchover time);
#   outage:              first failed check -> first good check again. Keyway holds
#                        new clients while there is no master (timeouts.hold), so
#                        a failover may show slow checks and no failed one.
set -euo pipefail

PROG="$(basename "$0")"
HERE="$(cd "$(dirname "$0")" && pwd)"
E2E="$HERE/redis_ha_end_to_end.sh"

MODE=lab
KEYWAY="${KEYWAY_BIN:-}"
REPLICAS=2
PROXY=""
MASTER_SSH=""
STOP_COMMAND="sudo systemctl stop redis-server"
PASSWORD_FILE=""
RESTART_OLD=false
MAX_SECONDS=10
SETTLE_SECONDS=30
INTERVAL=0.1
LOG_DIR=""
CHECK_TIMEOUT=5

usage() { sed -n '2,44s/^# \{0,1\}//p' "$0"; }
die() {
  printf '%s: FAIL: %s\n' "$PROG" "$*" >&2
  exit 1
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --keyway) KEYWAY="${2:?}"; shift 2 ;;
    --replicas) REPLICAS="${2:?}"; shift 2 ;;
    --proxy) PROXY="${2:?}"; MODE=remote; shift 2 ;;
    --master-ssh) MASTER_SSH="${2:?}"; MODE=remote; shift 2 ;;
    --stop-command) STOP_COMMAND="${2:?}"; shift 2 ;;
    --password-file) PASSWORD_FILE="${2:?}"; shift 2 ;;
    --restart-old-master) RESTART_OLD=true; shift ;;
    --max-seconds) MAX_SECONDS="${2:?}"; shift 2 ;;
    --settle-seconds) SETTLE_SECONDS="${2:?}"; shift 2 ;;
    --interval) INTERVAL="${2:?}"; shift 2 ;;
    --log-dir) LOG_DIR="${2:?}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) printf '%s: unknown option %s (see --help)\n' "$PROG" "$1" >&2; exit 2 ;;
  esac
done
[[ "$MAX_SECONDS" =~ ^[0-9]+$ && "$SETTLE_SECONDS" =~ ^[0-9]+$ ]] || die "--max-seconds and --settle-seconds take whole seconds"
command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found: apt-get install -y redis-tools"

LOG_DIR="${LOG_DIR:-/tmp/keyway-failover/$(date -u +%Y%m%dT%H%M%SZ)-$$}"
mkdir -p "$LOG_DIR"
RESULTS="$LOG_DIR/checks.tsv" # start_ms end_ms OK|FAIL
LOOP_LOG="$LOG_DIR/end_to_end.log"
STOP_FLAG="$LOG_DIR/stop-loop"
: >"$RESULTS"

now_ms() {
  local t="${EPOCHREALTIME//[.,]/}"
  echo $((t / 1000))
}
clock() { date -u +%H:%M:%S.%3N; }
say() { printf 'failover: %s\n' "$*" | tee -a "$LOG_DIR/failover.log"; }
secs() { # secs MS -> "1.234"
  printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
}

LAB_PID=""
LOOP_PID=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local status=$?
  touch "$STOP_FLAG" 2>/dev/null || true
  if [ -n "$LOOP_PID" ]; then
    kill "$LOOP_PID" 2>/dev/null || true
    wait "$LOOP_PID" 2>/dev/null || true
  fi
  if [ -n "$LAB_PID" ] && kill -0 "$LAB_PID" 2>/dev/null; then
    # keyway lab stops its Redis processes when it exits on SIGTERM.
    kill -TERM "$LAB_PID" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$LAB_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$LAB_PID" 2>/dev/null; then
      echo "$PROG: keyway lab did not stop on SIGTERM; killing its process group" >&2
      kill -KILL -- "-$LAB_PID" 2>/dev/null || true
    fi
    wait "$LAB_PID" 2>/dev/null || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Set up: the endpoint, its password, and how to stop the master ---------

if [ "$MODE" = lab ]; then
  if [ -z "$KEYWAY" ]; then
    for candidate in "$HERE/../target/release/keyway" "$HERE/../target/debug/keyway" "$(command -v keyway || true)"; do
      if [ -n "$candidate" ] && [ -x "$candidate" ]; then
        KEYWAY="$candidate"
        break
      fi
    done
  fi
  if [ -z "$KEYWAY" ] || [ ! -x "$KEYWAY" ]; then
    die "no keyway binary: build it (cargo build --release -p keyway), or pass --keyway PATH"
  fi
  ENV_FILE="$LOG_DIR/lab.env"
  say "starting: $KEYWAY lab --port 0 --replicas $REPLICAS --env-file $ENV_FILE"
  # Its own process group (setsid), so that a last-resort kill reaches its children.
  setsid "$KEYWAY" lab --port 0 --replicas "$REPLICAS" --env-file "$ENV_FILE" \
    >"$LOG_DIR/lab.out" 2>"$LOG_DIR/lab.log" </dev/null &
  LAB_PID=$!
  deadline=$((SECONDS + 60))
  until [ -s "$ENV_FILE" ]; do
    if ! kill -0 "$LAB_PID" 2>/dev/null; then
      tail -n 20 "$LOG_DIR/lab.log" "$LOG_DIR/lab.out" >&2 || true
      die "keyway lab exited before writing $ENV_FILE (does this keyway have lab --env-file?)"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "keyway lab wrote no $ENV_FILE within 60 s"
    sleep 0.1
  done
  sleep 0.2 # the file is written at once, but leave its writer a moment
  # shellcheck source=/dev/null
  . "$ENV_FILE"
  for var in KEYWAY_LAB_PORT KEYWAY_LAB_PASSWORD_FILE KEYWAY_LAB_MASTER KEYWAY_LAB_NODES; do
    [ -n "${!var:-}" ] || die "$ENV_FILE has no $var"
  done
  HOST="${KEYWAY_LAB_HOST:-127.0.0.1}"
  PORT="$KEYWAY_LAB_PORT"
  PASSWORD_FILE="$KEYWAY_LAB_PASSWORD_FILE"
  OLD_MASTER="$KEYWAY_LAB_MASTER"
  say "lab ready: endpoint $HOST:$PORT, master $OLD_MASTER, nodes $KEYWAY_LAB_NODES, sentinels ${KEYWAY_LAB_SENTINELS:-none}"
  [ -n "${KEYWAY_LAB_SENTINELS:-}" ] || say "WARNING: the lab has no sentinels: nothing will promote a replica"
else
  if [ -z "$PROXY" ] || [ -z "$MASTER_SSH" ]; then
    die "remote mode needs both --proxy HOST:PORT and --master-ssh HOST"
  fi
  HOST="${PROXY%:*}"
  PORT="${PROXY##*:}"
  [[ "$PORT" =~ ^[0-9]+$ ]] || die "--proxy must be HOST:PORT"
  command -v ssh >/dev/null 2>&1 || die "ssh not found"
  OLD_MASTER="$MASTER_SSH (ssh)"
fi

if [ -n "$PASSWORD_FILE" ]; then
  [ -r "$PASSWORD_FILE" ] || die "cannot read $PASSWORD_FILE"
  REDISCLI_AUTH="$(head -n 1 "$PASSWORD_FILE" | tr -d '\r')"
  export REDISCLI_AUTH
fi

# The server behind the endpoint: "tcp_port run_id".
endpoint_server() {
  timeout 3 redis-cli --no-auth-warning -h "$HOST" -p "$PORT" INFO server 2>/dev/null |
    tr -d '\r' | awk -F: '$1 == "tcp_port" { port = $2 } $1 == "run_id" { id = $2 } END { print port, id }'
}

# --- Before: the endpoint works ------------------------------------------------

say "log directory: $LOG_DIR"
if ! "$E2E" --quiet --min-replicas 1 --log "$LOOP_LOG" "$HOST" "$PORT" >"$LOG_DIR/precheck.out"; then
  cat "$LOG_DIR/precheck.out" >&2
  die "the end-to-end check fails before the failover: fix that first"
fi
read -r OLD_PORT OLD_RUN_ID <<<"$(endpoint_server)"
say "before: end-to-end OK; master behind the endpoint: tcp_port=$OLD_PORT run_id=$OLD_RUN_ID"

# --- The check loop -----------------------------------------------------------

check_loop() {
  local start end result
  while [ ! -e "$STOP_FLAG" ]; do
    start="$(now_ms)"
    if "$E2E" --quiet --min-replicas 0 --timeout "$CHECK_TIMEOUT" --log "$LOOP_LOG" "$HOST" "$PORT" >>"$LOG_DIR/checks.out" 2>&1; then
      result=OK
    else
      result=FAIL
    fi
    end="$(now_ms)"
    printf '%s\t%s\t%s\n' "$start" "$end" "$result" >>"$RESULTS"
    sleep "$INTERVAL"
  done
}
check_loop &
LOOP_PID=$!
sleep 1

# --- Stop the master ------------------------------------------------------------

if [ "$MODE" = lab ]; then
  master_host="${OLD_MASTER%:*}"
  master_port="${OLD_MASTER##*:}"
  say "stopping the master $OLD_MASTER: redis-cli -h $master_host -p $master_port SHUTDOWN NOSAVE"
  KILL_CLOCK="$(clock)"
  KILL_MS="$(now_ms)"
  # Like systemctl stop (SIGTERM): Redis 7 first lets replicas catch up (up to
  # shutdown-timeout), then exits; the measure starts when the command is sent.
  timeout 15 redis-cli --no-auth-warning -h "$master_host" -p "$master_port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  for _ in $(seq 100); do
    timeout 1 redis-cli --no-auth-warning -h "$master_host" -p "$master_port" PING >/dev/null 2>&1 || break
    sleep 0.1
  done
else
  say "stopping the master: ssh $MASTER_SSH $STOP_COMMAND"
  KILL_CLOCK="$(clock)"
  KILL_MS="$(now_ms)"
  # shellcheck disable=SC2086 # the command is meant to be split into words
  ssh -o BatchMode=yes -o ConnectTimeout=5 "$MASTER_SSH" $STOP_COMMAND || die "ssh $MASTER_SSH $STOP_COMMAND failed"
fi
say "stop sent at $KILL_CLOCK; the stop command returned after $(secs $(($(now_ms) - KILL_MS))) s"

# --- Wait for recovery, then for a stable run ---------------------------------------

# first_ok_after MS: the first good check that started at or after MS: "start end".
first_ok_after() { awk -v t="$1" '$1 >= t && $3 == "OK" { print $1, $2; exit }' "$RESULTS"; }
RECOVERY=""
deadline=$((SECONDS + SETTLE_SECONDS))
while [ "$SECONDS" -lt "$deadline" ]; do
  RECOVERY="$(first_ok_after "$KILL_MS")"
  [ -z "$RECOVERY" ] || break
  sleep 0.1
done
if [ -z "$RECOVERY" ]; then
  touch "$STOP_FLAG"
  wait "$LOOP_PID" 2>/dev/null || true
  LOOP_PID=""
  tail -n 5 "$LOG_DIR/checks.out" >&2 || true
  die "no good check within ${SETTLE_SECONDS}s of stopping the master (no new master? see $LOG_DIR)"
fi
read -r _ RECOVERED_MS <<<"$RECOVERY"
# Commands keep working: 2 s of checks after recovery, all of them good.
sleep 2
touch "$STOP_FLAG"
wait "$LOOP_PID" 2>/dev/null || true
LOOP_PID=""

# --- Report -------------------------------------------------------------------------

KILL_TO_OK=$((RECOVERED_MS - KILL_MS))
FIRST_FAIL="$(awk -v t="$KILL_MS" '$2 >= t && $3 == "FAIL" { print $2; exit }' "$RESULTS")"
read -r ok_count fail_count longest <<<"$(awk -v t="$KILL_MS" '
  $2 >= t { if ($3 == "OK") ok++; else bad++; d = $2 - $1; if (d > max) max = d }
  END { print ok + 0, bad + 0, max + 0 }' "$RESULTS")"
AFTER_BAD="$(awk -v t="$RECOVERED_MS" '$1 > t && $3 == "FAIL"' "$RESULTS" | wc -l)"

read -r NEW_PORT NEW_RUN_ID <<<"$(endpoint_server)"
say "master stopped:            $OLD_MASTER (tcp_port=$OLD_PORT)"
if [ -n "$FIRST_FAIL" ]; then
  OUTAGE=$((RECOVERED_MS - FIRST_FAIL))
  say "first failed check:        +$(secs $((FIRST_FAIL - KILL_MS))) s after the stop"
  say "outage (fail -> good):     $(secs "$OUTAGE") s"
else
  say "first failed check:        none (Keyway held the clients until the new master was confirmed)"
fi
say "kill -> first good check:  $(secs "$KILL_TO_OK") s"
say "checks after the stop:     $ok_count good, $fail_count failed, longest $(secs "$longest") s"
say "new master (endpoint):     tcp_port=$NEW_PORT run_id=$NEW_RUN_ID"
if [ "$MODE" = lab ]; then
  for node in $KEYWAY_LAB_NODES; do
    [ "${node##*:}" != "$NEW_PORT" ] || say "new master (lab node):     $node"
  done
  for sentinel in ${KEYWAY_LAB_SENTINELS:-}; do
    addr="$(timeout 2 redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" SENTINEL get-master-addr-by-name "${KEYWAY_LAB_MASTER_NAME:-mymaster}" 2>/dev/null | tr -d '\r' | paste -sd: -)" || true
    say "sentinel $sentinel says:  ${addr:-no answer}"
    break
  done
  if [ -n "${KEYWAY_LAB_ADMIN:-}" ] && "$KEYWAY" status --help >/dev/null 2>&1; then
    say "keyway status -a $KEYWAY_LAB_ADMIN:"
    "$KEYWAY" status -a "$KEYWAY_LAB_ADMIN" 2>&1 | sed 's/^/    /' | tee -a "$LOG_DIR/failover.log" || true
  fi
fi
if [ "$RESTART_OLD" = true ] && [ "$MODE" = remote ]; then
  say "restarting redis-server on $MASTER_SSH (it rejoins as a replica)"
  ssh -o BatchMode=yes "$MASTER_SSH" "${STOP_COMMAND/ stop / start }" || say "WARNING: the restart failed"
elif [ "$MODE" = remote ]; then
  say "remember: ssh $MASTER_SSH ${STOP_COMMAND/ stop / start }   (the old master rejoins as a replica)"
fi

status=0
if [ -z "$NEW_RUN_ID" ] || [ "$NEW_RUN_ID" = "$OLD_RUN_ID" ]; then
  say "FAIL: the endpoint does not answer from a new master (run_id ${NEW_RUN_ID:-none}, was $OLD_RUN_ID)"
  status=1
fi
if [ "$AFTER_BAD" -gt 0 ]; then
  say "FAIL: $AFTER_BAD check(s) failed after the recovery: commands did not keep working"
  status=1
fi
if [ "$KILL_TO_OK" -gt $((MAX_SECONDS * 1000)) ]; then
  say "FAIL: switchover $(secs "$KILL_TO_OK") s > ${MAX_SECONDS} s"
  status=1
fi
if [ "$status" -eq 0 ]; then
  say "OK: switchover $(secs "$KILL_TO_OK") s <= ${MAX_SECONDS} s, new master tcp_port=$NEW_PORT (logs: $LOG_DIR)"
fi
exit "$status"

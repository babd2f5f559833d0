#!/usr/bin/env bash
# CI check of scripts/redis_ha_end_to_end.sh against `keyway lab --env-file`
# (Keyway in front of a local HA group): OK with --password-file and with
# REDISCLI_AUTH, a timestamped log without the password, /healthz 200 on the
# admin address, one FAIL line and a non-zero exit with a wrong password, and a
# refused --password option.
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

apt_install curl:curl
WORK="$(mktemp -d "${TMPDIR:-/tmp}/keyway-e2e.XXXXXX")"
trap 'stop_lab; rm -rf "$WORK"' EXIT
E2E=scripts/redis_ha_end_to_end.sh

section "keyway lab"
start_lab "$WORK/lab"
port="$KEYWAY_LAB_PORT"
pwfile="$KEYWAY_LAB_PASSWORD_FILE"
log="$WORK/e2e.log"

section "--password-file"
"$E2E" --password-file "$pwfile" --log "$log" 127.0.0.1 "$port" | tee "$WORK/out"
[ "$(tail -n 1 "$WORK/out")" = OK ] || die "no OK"
grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z START endpoint=127\.0\.0\.1:' "$log" || die "no timestamped START line in the log"
grep -qE 'Z OK all steps passed' "$log" || die "no OK line in the log"
if grep -qF -- "$(head -n 1 "$pwfile")" "$log"; then die "the password is in the log"; fi
note "log: $(wc -l <"$log") lines, timestamped, no password"

section "REDISCLI_AUTH"
out="$(REDISCLI_AUTH="$(head -n 1 "$pwfile")" "$E2E" --quiet --log "$log" 127.0.0.1 "$port")"
[ "$out" = OK ] || die "expected OK, got: $out"
note "ok  $out"

section "/healthz (what the load balancer checks)"
if [ -n "${KEYWAY_LAB_ADMIN:-}" ]; then
  body="$(curl -sS --max-time 3 "http://$KEYWAY_LAB_ADMIN/healthz")" || die "GET /healthz failed"
  code="$(curl -sS --max-time 3 -o /dev/null -w '%{http_code}' "http://$KEYWAY_LAB_ADMIN/healthz")"
  [ "$code" = 200 ] || die "GET /healthz: $code $body"
  note "ok  GET http://$KEYWAY_LAB_ADMIN/healthz -> $code $body"
else
  die "the lab env file has no KEYWAY_LAB_ADMIN"
fi

section "a wrong password: one FAIL line, exit 1"
status=0
out="$(REDISCLI_AUTH=wrong-password "$E2E" --quiet --log "$log" 127.0.0.1 "$port")" || status=$?
printf '%s\n' "$out"
[ "$status" -eq 1 ] || die "expected exit 1, got $status"
[[ "$out" == "FAIL: PING: "* ]] || die "expected a FAIL: PING line"

section "a password on the command line is refused"
status=0
"$E2E" --password secret 127.0.0.1 "$port" 2>"$WORK/err" || status=$?
cat "$WORK/err"
[ "$status" -eq 2 ] || die "expected exit 2 for --password, got $status"

section "OK"

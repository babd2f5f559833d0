#!/usr/bin/env bash
# CI test of deploy/hcloud/configure_lb_redis.sh against a fake `hcloud`
# (scripts/ci/fake_hcloud.py) first on PATH. The fake records every call and
# answers `describe` from a JSON state file that the changing calls update; it
# never touches a network. Asserted:
#   - clear errors when hcloud is missing and when no token is set;
#   - --dry-run prints the commands and changes nothing;
#   - the first run adds the TCP service, sets its /healthz health check and
#     adds both proxy nodes as targets by private IP; the second adds nothing;
#   - --proxy-protocol updates only that flag, once;
#   - a target reached by its public IP is reported, with the fix.
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh
source "$(dirname "$0")/lib.sh"

apt_install jq:jq
SCRIPT="$REPO_ROOT/deploy/hcloud/configure_lb_redis.sh"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/keyway-hcloud.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bin" "$WORK/nohcloud"
ln -s "$CI_DIR/fake_hcloud.py" "$WORK/bin/hcloud"
export FAKE_HCLOUD_STATE="$WORK/state.json" FAKE_HCLOUD_LOG="$WORK/calls.log"
FAKE_PATH="$WORK/bin:$PATH"

reset_state() { # reset_state [extra jq filter]
  jq "${1:-.}" >"$FAKE_HCLOUD_STATE" <<'JSON'
{
  "load_balancer": {
    "id": 4711, "name": "lb-redis",
    "private_net": [{"network": 1, "ip": "10.0.0.10"}],
    "services": [], "targets": []
  },
  "servers": {
    "proxy-01": {"id": 101, "name": "proxy-01", "private_net": [{"ip": "10.0.0.21"}]},
    "proxy-02": {"id": 102, "name": "proxy-02", "private_net": [{"ip": "10.0.0.22"}]}
  }
}
JSON
  : >"$FAKE_HCLOUD_LOG"
}
# run_script LOG ARGS...: the script with the fake first on PATH; returns its status.
run_script() {
  local log="$1"
  shift
  PATH="$FAKE_PATH" HCLOUD_TOKEN=fake-token "$SCRIPT" "$@" >"$log" 2>&1
}
mutations() { grep -cvE '^(load-balancer describe|server describe|context active)' "$FAKE_HCLOUD_LOG" || true; }
calls() { grep -cE "$1" "$FAKE_HCLOUD_LOG" || true; }
expect() { # expect LOG REGEX WHAT
  grep -qE -- "$2" "$1" || {
    cat "$1"
    die "$3"
  }
}

section "errors: hcloud missing, token missing"
reset_state
if PATH="$WORK/nohcloud:/usr/bin:/bin" "$SCRIPT" --lb lb-redis >"$WORK/nohcloud.log" 2>&1; then
  die "the script succeeded without hcloud"
fi
if PATH="$WORK/nohcloud:/usr/bin:/bin" command -v hcloud >/dev/null 2>&1; then
  note "a real hcloud is in /usr/bin: missing-binary case not asserted"
else
  expect "$WORK/nohcloud.log" 'hcloud not found on PATH' "no clear error without hcloud"
  note "ok  $(cat "$WORK/nohcloud.log")"
fi
if env -u HCLOUD_TOKEN PATH="$FAKE_PATH" "$SCRIPT" --lb lb-redis >"$WORK/notoken.log" 2>&1; then
  die "the script succeeded without a token"
fi
expect "$WORK/notoken.log" 'no Hetzner Cloud token' "no clear error without a token"
note "ok  $(cat "$WORK/notoken.log")"
[ "$(mutations)" -eq 0 ] || die "calls that change the balancer without a token"

section "--dry-run prints and changes nothing"
reset_state
run_script "$WORK/dry.log" --lb lb-redis --dry-run || {
  cat "$WORK/dry.log"
  die "dry run failed"
}
cat "$WORK/dry.log"
expect "$WORK/dry.log" '^would run: hcloud load-balancer add-service lb-redis --protocol tcp --listen-port 6379 --destination-port 6379 --proxy-protocol=false$' "dry run: add-service"
expect "$WORK/dry.log" '^would run: hcloud load-balancer update-service lb-redis --listen-port 6379 .*--health-check-protocol http --health-check-port 9470 .*--health-check-http-path /healthz' "dry run: health check"
expect "$WORK/dry.log" '^would run: hcloud load-balancer add-target lb-redis --server proxy-01 --use-private-ip$' "dry run: proxy-01"
expect "$WORK/dry.log" '^would run: hcloud load-balancer add-target lb-redis --server proxy-02 --use-private-ip$' "dry run: proxy-02"
[ "$(mutations)" -eq 0 ] || die "dry run changed the balancer: $(cat "$FAKE_HCLOUD_LOG")"
note "ok  4 commands printed, 0 run"

section "first run: adds the service, its health check and both targets"
: >"$FAKE_HCLOUD_LOG"
run_script "$WORK/run1.log" --lb lb-redis || {
  cat "$WORK/run1.log"
  die "first run failed"
}
cat "$WORK/run1.log"
note "calls:"
sed 's/^/    hcloud /' "$FAKE_HCLOUD_LOG"
[ "$(calls '^load-balancer add-service ')" -eq 1 ] || die "expected 1 add-service"
[ "$(calls '^load-balancer update-service ')" -eq 1 ] || die "expected 1 update-service"
[ "$(calls '^load-balancer add-target lb-redis --server proxy-0[12] --use-private-ip$')" -eq 2 ] || die "expected 2 add-target"
[ "$(mutations)" -eq 4 ] || die "expected 4 changing calls"
jq -e '.load_balancer.services == [{
    "protocol": "tcp", "listen_port": 6379, "destination_port": 6379, "proxyprotocol": false,
    "health_check": {"protocol": "http", "port": 9470, "interval": 5, "timeout": 3, "retries": 2,
      "http": {"domain": "", "path": "/healthz", "response": "", "status_codes": ["200"], "tls": false}},
    "http": null}]
  and ([.load_balancer.targets[] | [.server.id, .use_private_ip]] == [[101, true], [102, true]])' \
  "$FAKE_HCLOUD_STATE" >/dev/null || {
  jq . "$FAKE_HCLOUD_STATE"
  die "unexpected balancer state after the first run"
}
note "ok  state: tcp 6379->6379, health http :9470/healthz (200), targets 101 + 102 by private IP"

section "second run: adds nothing"
: >"$FAKE_HCLOUD_LOG"
run_script "$WORK/run2.log" --lb lb-redis || {
  cat "$WORK/run2.log"
  die "second run failed"
}
cat "$WORK/run2.log"
[ "$(mutations)" -eq 0 ] || die "second run changed the balancer: $(cat "$FAKE_HCLOUD_LOG")"
expect "$WORK/run2.log" '^nothing to do' "second run did not say nothing to do"
note "ok  only describe calls: $(tr '\n' ';' <"$FAKE_HCLOUD_LOG")"

section "--proxy-protocol: one update, then nothing"
: >"$FAKE_HCLOUD_LOG"
run_script "$WORK/run3.log" --lb lb-redis --proxy-protocol || {
  cat "$WORK/run3.log"
  die "proxy-protocol run failed"
}
grep -vE '^(load-balancer describe|server describe)' "$FAKE_HCLOUD_LOG" | grep -qx 'load-balancer update-service lb-redis --listen-port 6379 --proxy-protocol=true' ||
  die "expected exactly: update-service --proxy-protocol=true; got: $(cat "$FAKE_HCLOUD_LOG")"
[ "$(mutations)" -eq 1 ] || die "expected 1 changing call"
: >"$FAKE_HCLOUD_LOG"
run_script "$WORK/run4.log" --lb lb-redis --proxy-protocol || die "second proxy-protocol run failed"
[ "$(mutations)" -eq 0 ] || die "second proxy-protocol run changed the balancer"
note "ok  update-service --proxy-protocol=true once, then nothing"

section "not on a private network: attach with --network, or a clear error"
reset_state '.load_balancer.private_net = []'
if run_script "$WORK/nonet.log" --lb lb-redis; then
  die "succeeded without a private network"
fi
expect "$WORK/nonet.log" 'on no private network' "no clear error without a private network"
[ "$(mutations)" -eq 0 ] || die "changed the balancer without a private network"
run_script "$WORK/net.log" --lb lb-redis --network net-private --lb-ip 10.0.0.10 || {
  cat "$WORK/net.log"
  die "--network run failed"
}
[ "$(calls '^load-balancer attach-to-network lb-redis --network net-private --ip 10.0.0.10$')" -eq 1 ] || die "expected attach-to-network"
: >"$FAKE_HCLOUD_LOG"
run_script "$WORK/net2.log" --lb lb-redis --network net-private --lb-ip 10.0.0.10 || die "second --network run failed"
[ "$(mutations)" -eq 0 ] || die "second --network run changed the balancer"
note "ok  attach-to-network once, then nothing"

section "a target on its public IP is reported with the fix"
reset_state '.load_balancer.targets = [{"type": "server", "server": {"id": 101}, "use_private_ip": false}]'
if run_script "$WORK/public.log" --lb lb-redis; then
  die "succeeded with a public-IP target"
fi
expect "$WORK/public.log" 'target proxy-01 is reached by its public IP' "no error for the public-IP target"
expect "$WORK/public.log" 'hcloud load-balancer remove-target lb-redis --server proxy-01' "no fix given"
note "ok  $(grep -m1 'public IP' "$WORK/public.log")"

section "OK"

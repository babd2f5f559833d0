#!/usr/bin/env bash
# Configure the Hetzner Cloud load balancer in front of the Keyway nodes:
#
#   apps -> LB 10.0.0.10:6379 (TCP) -> proxy-01 / proxy-02 :6379 (Keyway) -> Redis master
#
# - a TCP service listen 6379 -> destination 6379, optional PROXY protocol;
# - its health check: HTTP GET /healthz on Keyway's admin port (9470), healthy
#   on 200 only (Keyway answers 503 without a confirmed master or while it drains,
#   so the balancer stops sending new clients to that node);
# - proxy-01 and proxy-02 as server targets reached by their private IP;
# - optionally, the balancer attached to the private network at 10.0.0.10.
#
# Idempotent: it describes the balancer first and only adds or updates what is
# missing or different; a second run changes nothing. --dry-run prints the
# commands it would run (it still reads the balancer, read-only).
#
# Needs: hcloud (https://github.com/hetznercloud/cli), jq, and a token:
# HCLOUD_TOKEN or an active `hcloud context`.
#
# Example:
#   deploy/hcloud/configure_lb_redis.sh --lb lb-redis --network net-private --lb-ip 10.0.0.10 --dry-run
#   deploy/hcloud/configure_lb_redis.sh --lb lb-redis --network net-private --lb-ip 10.0.0.10
#   hcloud load-balancer describe lb-redis
set -euo pipefail

PROG="$(basename "$0")"
LB=""
SERVERS=()
LISTEN_PORT=6379
DESTINATION_PORT=6379
ADMIN_PORT=9470
HEALTH_PATH=/healthz
HEALTH_INTERVAL=5s
HEALTH_TIMEOUT=3s
HEALTH_RETRIES=2
PROXY_PROTOCOL=false
NETWORK=""
LB_IP=""
DRY_RUN=false

usage() {
  cat <<EOF
Usage: $PROG --lb NAME|ID [options]

  --lb NAME|ID              the load balancer (required)
  --server NAME             a Keyway node to add as a target, by private IP;
                            repeat it (default: proxy-01 and proxy-02)
  --listen-port N           balancer port (default $LISTEN_PORT)
  --destination-port N      Keyway's listen port on the nodes (default $DESTINATION_PORT)
  --admin-port N            Keyway's [admin] port, for the health check (default $ADMIN_PORT)
  --health-path PATH        health check path (default $HEALTH_PATH)
  --health-interval D       (default $HEALTH_INTERVAL)
  --health-timeout D        (default $HEALTH_TIMEOUT)
  --health-retries N        (default $HEALTH_RETRIES)
  --proxy-protocol          send the PROXY protocol header to Keyway (Keyway's
                            listener must expect it); without it: off
  --network NAME|ID         attach the balancer to this private network if it is
                            on none (needed to reach targets by private IP)
  --lb-ip IP                the balancer's IP on that network (e.g. 10.0.0.10)
  --dry-run                 print the commands, change nothing
  -h, --help                this help

Token: HCLOUD_TOKEN, or the active context of \`hcloud context\`.
EOF
}

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --lb) LB="${2:?--lb needs a value}"; shift 2 ;;
    --server) SERVERS+=("${2:?--server needs a value}"); shift 2 ;;
    --listen-port) LISTEN_PORT="${2:?}"; shift 2 ;;
    --destination-port) DESTINATION_PORT="${2:?}"; shift 2 ;;
    --admin-port) ADMIN_PORT="${2:?}"; shift 2 ;;
    --health-path) HEALTH_PATH="${2:?}"; shift 2 ;;
    --health-interval) HEALTH_INTERVAL="${2:?}"; shift 2 ;;
    --health-timeout) HEALTH_TIMEOUT="${2:?}"; shift 2 ;;
    --health-retries) HEALTH_RETRIES="${2:?}"; shift 2 ;;
    --proxy-protocol) PROXY_PROTOCOL=true; shift ;;
    --network) NETWORK="${2:?}"; shift 2 ;;
    --lb-ip) LB_IP="${2:?}"; shift 2 ;;
    --dry-run) DRY_RUN=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
[ -n "$LB" ] || { usage >&2; die "--lb is required"; }
[ "${#SERVERS[@]}" -gt 0 ] || SERVERS=(proxy-01 proxy-02)
for n in "$LISTEN_PORT" "$DESTINATION_PORT" "$ADMIN_PORT" "$HEALTH_RETRIES"; do
  [[ "$n" =~ ^[0-9]+$ ]] || die "not a number: $n"
done

command -v hcloud >/dev/null 2>&1 ||
  die "hcloud not found on PATH: install the Hetzner Cloud CLI (https://github.com/hetznercloud/cli/releases, or apt-get install hcloud-cli)"
command -v jq >/dev/null 2>&1 || die "jq not found on PATH: apt-get install -y jq"
if [ -z "${HCLOUD_TOKEN:-}" ] && [ -z "$(hcloud context active 2>/dev/null || true)" ]; then
  die "no Hetzner Cloud token: export HCLOUD_TOKEN=... (read+write API token of the project), or run: hcloud context create NAME"
fi

CHANGES=0
# run CMD...: runs a command that changes the balancer, or prints it (--dry-run).
run() {
  CHANGES=$((CHANGES + 1))
  if [ "$DRY_RUN" = true ]; then
    printf 'would run: %s\n' "$*"
  else
    printf '+ %s\n' "$*"
    "$@"
  fi
}

LB_JSON="$(hcloud load-balancer describe "$LB" -o json 2>&1)" ||
  die "cannot describe load balancer '$LB': $LB_JSON"
jq -e '.id' <<<"$LB_JSON" >/dev/null 2>&1 || die "unexpected answer from hcloud load-balancer describe $LB: $LB_JSON"
printf 'load balancer %s: id %s, %s service(s), %s target(s)\n' "$LB" \
  "$(jq -r '.id' <<<"$LB_JSON")" "$(jq '.services | length' <<<"$LB_JSON")" "$(jq '.targets | length' <<<"$LB_JSON")"

# 1. The private network: targets are reached by private IP.
if [ "$(jq '.private_net | length' <<<"$LB_JSON")" -eq 0 ]; then
  [ -n "$NETWORK" ] ||
    die "load balancer '$LB' is on no private network, so it cannot reach targets by private IP: give --network NAME [--lb-ip 10.0.0.10]"
  attach=(hcloud load-balancer attach-to-network "$LB" --network "$NETWORK")
  [ -z "$LB_IP" ] || attach+=(--ip "$LB_IP")
  run "${attach[@]}"
else
  ips="$(jq -r '[.private_net[].ip] | join(" ")' <<<"$LB_JSON")"
  printf 'ok: on a private network (%s)\n' "$ips"
  if [ -n "$LB_IP" ] && ! jq -e --arg ip "$LB_IP" 'any(.private_net[]; .ip == $ip)' <<<"$LB_JSON" >/dev/null; then
    die "load balancer '$LB' has private IP(s) $ips, not $LB_IP: applications use $LB_IP; fix this by hand (hcloud load-balancer detach-from-network / attach-to-network --ip $LB_IP)"
  fi
fi

# 2. The TCP service and its health check.
SERVICE="$(jq -c --argjson port "$LISTEN_PORT" '.services[] | select(.listen_port == $port)' <<<"$LB_JSON")"
update=(hcloud load-balancer update-service "$LB" --listen-port "$LISTEN_PORT")
if [ -z "$SERVICE" ]; then
  run hcloud load-balancer add-service "$LB" --protocol tcp --listen-port "$LISTEN_PORT" \
    --destination-port "$DESTINATION_PORT" --proxy-protocol="$PROXY_PROTOCOL"
  # A new service gets a TCP health check on the destination port: replace it.
  SERVICE='{}'
else
  protocol="$(jq -r '.protocol' <<<"$SERVICE")"
  [ "$protocol" = tcp ] ||
    die "port $LISTEN_PORT of '$LB' is a '$protocol' service, not tcp: remove it first (hcloud load-balancer delete-service $LB --listen-port $LISTEN_PORT)"
fi
# Only the settings that differ are passed, so a second run has nothing to update.
differs() { # differs JQ-FILTER EXPECTED (a missing value, null, differs)
  [ "$(jq -r "($1) | tostring" <<<"$SERVICE")" != "$2" ]
}
seconds() { # 5s -> 5, 1m -> 60
  case "$1" in
    *ms) echo $(("${1%ms}" / 1000)) ;;
    *s) echo "${1%s}" ;;
    *m) echo $(("${1%m}" * 60)) ;;
    *) echo "$1" ;;
  esac
}
fields=()
if [ "$SERVICE" != '{}' ]; then
  differs .destination_port "$DESTINATION_PORT" && fields+=(--destination-port "$DESTINATION_PORT")
  differs .proxyprotocol "$PROXY_PROTOCOL" && fields+=(--proxy-protocol="$PROXY_PROTOCOL")
fi
differs .health_check.protocol http && fields+=(--health-check-protocol http)
differs .health_check.port "$ADMIN_PORT" && fields+=(--health-check-port "$ADMIN_PORT")
differs .health_check.interval "$(seconds "$HEALTH_INTERVAL")" && fields+=(--health-check-interval "$HEALTH_INTERVAL")
differs .health_check.timeout "$(seconds "$HEALTH_TIMEOUT")" && fields+=(--health-check-timeout "$HEALTH_TIMEOUT")
differs .health_check.retries "$HEALTH_RETRIES" && fields+=(--health-check-retries "$HEALTH_RETRIES")
differs .health_check.http.path "$HEALTH_PATH" && fields+=(--health-check-http-path "$HEALTH_PATH")
differs '.health_check.http.status_codes | if . then join(",") else . end' 200 &&
  fields+=(--health-check-http-status-codes 200)
if [ "${#fields[@]}" -gt 0 ]; then
  run "${update[@]}" "${fields[@]}"
else
  printf 'ok: tcp service %s -> %s, proxy protocol %s, health check http :%s%s\n' \
    "$LISTEN_PORT" "$DESTINATION_PORT" "$PROXY_PROTOCOL" "$ADMIN_PORT" "$HEALTH_PATH"
fi

# 3. The targets: each Keyway node as a server target, by private IP.
public_targets=()
for server in "${SERVERS[@]}"; do
  server_json="$(hcloud server describe "$server" -o json 2>&1)" || die "cannot describe server '$server': $server_json"
  id="$(jq -r '.id' <<<"$server_json" 2>/dev/null || true)"
  [[ "$id" =~ ^[0-9]+$ ]] || die "unexpected answer from hcloud server describe $server: $server_json"
  target="$(jq -c --argjson id "$id" '.targets[] | select(.type == "server" and .server.id == $id)' <<<"$LB_JSON")"
  if [ -z "$target" ]; then
    run hcloud load-balancer add-target "$LB" --server "$server" --use-private-ip
  elif [ "$(jq -r '.use_private_ip' <<<"$target")" != true ]; then
    public_targets+=("$server")
  else
    printf 'ok: target %s (server %s) by private IP\n' "$server" "$id"
  fi
done
if [ "${#public_targets[@]}" -gt 0 ]; then
  for server in "${public_targets[@]}"; do
    printf '%s: error: target %s is reached by its public IP; replace it:\n  hcloud load-balancer remove-target %s --server %s && %s\n' \
      "$PROG" "$server" "$LB" "$server" "$0 --lb $LB" >&2
  done
  exit 1
fi

if [ "$CHANGES" -eq 0 ]; then
  echo "nothing to do: load balancer '$LB' is configured"
elif [ "$DRY_RUN" = true ]; then
  echo "dry run: $CHANGES command(s) not run"
else
  echo "done: $CHANGES change(s); check with: hcloud load-balancer describe $LB"
fi

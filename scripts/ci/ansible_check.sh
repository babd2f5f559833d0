#!/usr/bin/env bash
# CI check of the Ansible deployment (deploy/ansible/):
#   1. ansible-lint --offline --profile production: clean;
#   2. ansible-playbook --syntax-check on the playbook and the test playbook;
#   3. the role applied to localhost (connection: local) into a temporary root
#      (keyway_root), systemd tasks skipped: files, owners and modes; the rendered
#      keyway.toml passes `keyway check`; the rendered unit is byte-identical to
#      deploy/systemd/keyway.service; a second run changes nothing; the
#      notify-reload variant matches deploy/systemd/keyway-notify-reload.service;
#      an invalid configuration is refused by the validate step and the live
#      file is left as it was.
# Installs ansible-core and ansible-lint (pinned, scripts/ci/requirements.txt)
# into a venv when missing. Needs root for the file owners (nobody:nogroup).
#
#   scripts/ci/ansible_check.sh            the checks above
#   scripts/ci/ansible_check.sh --render   rewrite deploy/systemd/*.service from
#                                          the role's template (after editing it)
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh
source "$(dirname "$0")/lib.sh"

ci_venv
ANSIBLE_DIR="$REPO_ROOT/deploy/ansible"
cd "$ANSIBLE_DIR"
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_STDOUT_CALLBACK=default
export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false

# render_unit TYPE DEST: the unit template with the role's defaults.
render_unit() {
  ansible localhost -i localhost, -c local -o \
    -e "ansible_python_interpreter=$(command -v python3)" \
    -e @roles/keyway/defaults/main.yml -e "keyway_unit_type=$1" \
    -m ansible.builtin.template -a "src=roles/keyway/templates/keyway.service.j2 dest=$2 mode=0644" >/dev/null ||
    die "rendering the $1 unit failed"
}

if [ "${1:-}" = --render ]; then
  render_unit notify "$REPO_ROOT/deploy/systemd/keyway.service"
  render_unit notify-reload "$REPO_ROOT/deploy/systemd/keyway-notify-reload.service"
  note "rendered deploy/systemd/keyway.service and deploy/systemd/keyway-notify-reload.service"
  exit 0
fi

KEYWAY="$(keyway_bin)"

section "ansible-lint --offline --profile production"
ansible-lint --version | head -1
ansible-lint --offline --profile production --nocolor || die "ansible-lint reported problems"

section "ansible-playbook --syntax-check"
ansible-playbook --syntax-check playbooks/keyway.yml
ansible-playbook --syntax-check -i localhost, tests/localhost.yml

section "apply the role to localhost into a temporary root"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/keyway-ansible.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"
mkdir -p "$ROOT"
# A private copy: a rebuild of target/ during the test must not look like a change.
cp "$KEYWAY" "$WORK/keyway"
KEYWAY="$WORK/keyway"

write_vars() { # write_vars FILE LISTEN
  cat >"$1" <<VARS
keyway_root: "$ROOT"
keyway_manage_user: false
keyway_user: nobody
keyway_group: nogroup
keyway_binary_src: "$KEYWAY"
keyway_admin_listen: "127.0.0.1:19470"
keyway_log_format: text
keyway_drain_timeout: 20s
keyway_workers: 2
keyway_services:
  - name: redis
    listen: "$2"
    nodes: ["127.0.0.1:16379", "127.0.0.1:16380", "127.0.0.1:16381"]
    username: keyway
    password: "ci-redis-password"
    sentinel:
      master_name: mymaster
      nodes: ["127.0.0.1:26379", "127.0.0.1:26380", "127.0.0.1:26381"]
      password: "ci-sentinel-password"
    check: {interval: 500ms, timeout: 250ms, rise: 2, fall: 2}
    timeouts: {connect: 1s, hold: 10s}
keyway_conf_d_files:
  - name: 20-cache.toml
    content: |
      [[service]]
      name = "cache"
      listen = "127.0.0.1:16400"
      nodes = ["127.0.0.1:16401"]
VARS
}
write_vars "$WORK/vars.yml" "127.0.0.1:16379"

run_play() { # run_play LOG EXTRA-ARGS...: runs the test playbook, prints the recap
  local log="$1"
  shift
  if ! ansible-playbook -i localhost, tests/localhost.yml -e "@$WORK/vars.yml" \
    -e "ansible_python_interpreter=$(command -v python3)" "$@" >"$log" 2>&1; then
    cat "$log"
    return 1
  fi
  grep -E '^localhost +: ' "$log"
}
changed() { sed -nE 's/^localhost +: .*changed=([0-9]+).*/\1/p' "$1"; }

run_play "$WORK/run1.log" || die "first run failed"
[ "$(changed "$WORK/run1.log")" -gt 0 ] || die "first run changed nothing"

CONF="$ROOT/etc/keyway"
check_mode() { # check_mode PATH MODE OWNER:GROUP
  local got
  got="$(stat -c '%a %U:%G' "$1")" || die "missing $1"
  [ "$got" = "$2 $3" ] || die "$1: expected mode $2 owner $3, got $got"
  note "ok  $2 $3  ${1#"$ROOT"}"
}
check_mode "$ROOT/usr/local/bin/keyway" 755 root:root
check_mode "$CONF" 750 root:nogroup
check_mode "$CONF/conf.d" 750 root:nogroup
check_mode "$CONF/keyway.toml" 640 root:nogroup
check_mode "$CONF/conf.d/20-cache.toml" 640 root:nogroup
check_mode "$CONF/redis.password" 600 nobody:nogroup
[ "$(cat "$CONF/redis.password")" = ci-redis-password ] || die "redis.password content"
check_mode "$CONF/redis-sentinel.password" 600 nobody:nogroup
[ "$(cat "$CONF/redis-sentinel.password")" = ci-sentinel-password ] || die "redis-sentinel.password content"
for table in '[service.sentinel]' '[drain]' '[runtime]' '[service.check]' '[service.timeouts]'; do
  grep -qxF "$table" "$CONF/keyway.toml" || die "no $table in keyway.toml"
done
if ! grep -q '^password_file = ' "$CONF/keyway.toml" || grep -rqE 'ci-(redis|sentinel)-password' "$CONF/keyway.toml" "$CONF/conf.d"; then
  die "keyway.toml must name the password file, never hold the password"
fi

section "keyway check on the rendered configuration"
out="$("$KEYWAY" check -c "$CONF/keyway.toml")" || {
  printf '%s\n' "$out"
  die "keyway check rejected the rendered configuration"
}
printf '%s\n' "$out"
case "$out" in
  *"ok (2 service(s) from 2 file(s))"*) ;;
  *) die "expected 2 services from 2 files (keyway.toml + conf.d/20-cache.toml)" ;;
esac

UNIT="$ROOT/etc/systemd/system/keyway.service"
if ! grep -qx 'Type=notify' "$UNIT" || ! grep -qx 'User=nobody' "$UNIT"; then
  die "unexpected unit $UNIT"
fi
note "ok  unit: Type=notify (no systemd here: auto picks notify), User=nobody"

section "deploy/systemd/*.service == the role's template with its defaults"
for type in notify notify-reload; do
  file=keyway.service
  [ "$type" = notify ] || file=keyway-$type.service
  render_unit "$type" "$WORK/$file"
  diff -u "$REPO_ROOT/deploy/systemd/$file" "$WORK/$file" ||
    die "deploy/systemd/$file differs from the role's template: run scripts/ci/ansible_check.sh --render"
  note "ok  deploy/systemd/$file"
done

section "second run: idempotent"
run_play "$WORK/run2.log" || die "second run failed"
if [ "$(changed "$WORK/run2.log")" -ne 0 ]; then
  grep -B3 -E '^changed:' "$WORK/run2.log" >&2
  die "the second run changed something"
fi

section "keyway_systemd_type=notify-reload: the unit changes (restart handler), nothing else"
run_play "$WORK/run3.log" -e keyway_systemd_type=notify-reload || die "notify-reload run failed"
[ "$(changed "$WORK/run3.log")" -eq 1 ] || die "expected exactly the unit to change"
grep -qx 'Type=notify-reload' "$UNIT" || die "the unit is not Type=notify-reload"
note "ok  unit: Type=notify-reload"

section "an invalid configuration is refused and the live file kept"
before="$(sha256sum "$CONF/keyway.toml")"
write_vars "$WORK/vars.yml" "localhost:6379"
if run_play "$WORK/run4.log" >/dev/null; then
  die "the role accepted listen = \"localhost:6379\""
fi
if ! grep -q '"msg": "failed to validate"' "$WORK/run4.log" ||
  ! grep -qE 'source\.toml:[0-9]+:[0-9]+: invalid address \\"localhost:6379\\" for service\.listen' "$WORK/run4.log"; then
  cat "$WORK/run4.log"
  die "expected the template's validate step (keyway check) to fail on the listen address"
fi
[ "$(sha256sum "$CONF/keyway.toml")" = "$before" ] || die "the live keyway.toml was replaced by an invalid one"
note "refused by keyway check; live keyway.toml unchanged"

section "OK"

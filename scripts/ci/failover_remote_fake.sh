#!/usr/bin/env bash
# CI check of scripts/failover_test.sh's remote mode (--proxy, --master-ssh)
# without any remote host: a `keyway lab` plays the Redis group, and a fake
# `ssh` first on PATH records the command and turns
# `sudo systemctl stop redis-server` into SHUTDOWN NOSAVE of the lab's master.
# Asserts the ssh command line and the test's OK.
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keyway-remote.XXXXXX")"
trap 'stop_lab; rm -rf "$WORK"' EXIT

section "keyway lab"
start_lab "$WORK/lab"
mkdir -p "$WORK/bin"
cat >"$WORK/bin/ssh" <<SSH
#!/usr/bin/env bash
printf '%s\n' "\$*" >>"$WORK/ssh.log"
case "\$*" in
  *" redis-01 sudo systemctl stop redis-server")
    REDISCLI_AUTH="\$(cat "$KEYWAY_LAB_PASSWORD_FILE")" redis-cli --no-auth-warning \\
      -h "${KEYWAY_LAB_MASTER%:*}" -p "${KEYWAY_LAB_MASTER##*:}" SHUTDOWN NOSAVE >/dev/null 2>&1 || true ;;
  *) echo "fake ssh: unexpected: \$*" >&2; exit 255 ;;
esac
SSH
chmod +x "$WORK/bin/ssh"

section "failover_test.sh --proxy 127.0.0.1:$KEYWAY_LAB_PORT --master-ssh redis-01"
PATH="$WORK/bin:$PATH" scripts/failover_test.sh --proxy "127.0.0.1:$KEYWAY_LAB_PORT" --master-ssh redis-01 \
  --password-file "$KEYWAY_LAB_PASSWORD_FILE" --log-dir "$WORK/failover" | tee "$WORK/out"
grep -q '^failover: OK: switchover' "$WORK/out" || die "no OK from the remote-mode failover test"
[ "$(cat "$WORK/ssh.log")" = "-o BatchMode=yes -o ConnectTimeout=5 redis-01 sudo systemctl stop redis-server" ] ||
  die "unexpected ssh calls: $(cat "$WORK/ssh.log")"
note "ok  ssh redis-01 sudo systemctl stop redis-server, called once"
section "OK"

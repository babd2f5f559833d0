# shellcheck shell=bash
# Helpers shared by the scripts in scripts/ci/. Source it; it sets nothing else.
#
#   KEYWAY_BIN        the keyway binary to use; default: `cargo build --locked
#                     -p keyway` (debug, a no-op after scripts/test.sh) and
#                     target/debug/keyway. KEYWAY_PROFILE=release builds that.
#   KEYWAY_CI_VENV    the Python venv for ansible and redis-py (default
#                     ~/.cache/keyway-ci/venv), built from scripts/ci/requirements.txt.

CI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CI_DIR/../.." && pwd)"
CI_NAME="$(basename "$0" .sh)"

# A TERM or INT (timeout, Ctrl-C) exits through the caller's EXIT trap, which
# stops what it started (stop_lab, temp dirs).
trap 'exit 143' TERM
trap 'exit 130' INT

section() { printf '\n==== %s: %s\n' "$CI_NAME" "$*"; }
note() { printf '%s: %s\n' "$CI_NAME" "$*"; }
die() {
  printf '%s: FAIL: %s\n' "$CI_NAME" "$*" >&2
  exit 1
}

# apt_install CMD:PACKAGE...: installs the packages whose command is missing.
apt_install() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root or apt-get install -y ${missing[*]}"
  note "installing ${missing[*]} with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

# keyway_bin: prints the path of the keyway binary (building it if needed).
keyway_bin() {
  if [ -n "${KEYWAY_BIN:-}" ]; then
    [ -x "$KEYWAY_BIN" ] || die "KEYWAY_BIN=$KEYWAY_BIN is not an executable file"
    printf '%s\n' "$KEYWAY_BIN"
    return 0
  fi
  local profile="${KEYWAY_PROFILE:-debug}" target="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
  local flags=(--locked -p keyway)
  [ "$profile" = release ] && flags+=(--release)
  command -v cargo >/dev/null 2>&1 || die "cargo is missing and KEYWAY_BIN is not set"
  (cd "$REPO_ROOT" && cargo build --quiet "${flags[@]}") >&2 || die "cargo build ${flags[*]} failed"
  printf '%s\n' "$target/$profile/keyway"
}

# ci_venv: creates (once) the Python venv with the pinned tools and puts it first
# on PATH. Rebuilt when requirements.txt changes.
ci_venv() {
  local venv="${KEYWAY_CI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/keyway-ci/venv}"
  local req="$CI_DIR/requirements.txt" stamp
  stamp="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.keyway-stamp" 2>/dev/null)" != "$stamp" ]; then
    command -v python3 >/dev/null 2>&1 || apt_install python3:python3
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      [ "$(id -u)" -eq 0 ] || die "python3 has no venv module: apt-get install -y python3-venv"
      note "installing python3-venv with apt"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    note "creating the Python venv $venv (pip install -r scripts/ci/requirements.txt)"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install -y python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" ||
      die "pip install -r $req failed"
    printf '%s\n' "$stamp" >"$venv/.keyway-stamp"
  fi
  export PATH="$venv/bin:$PATH"
}

# wait_for_file FILE SECONDS PID: waits until FILE exists and is non-empty, while
# PID is alive. Returns 1 on timeout or when PID exits.
wait_for_file() {
  local file="$1" deadline=$((SECONDS + $2)) pid="$3"
  while [ ! -s "$file" ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# start_lab DIR [ARGS...]: starts `keyway lab --port 0 --env-file DIR/lab.env ARGS`
# in the background (its own process group), waits (60 s at most) for the env
# file and loads it: KEYWAY_LAB_PORT, KEYWAY_LAB_PASSWORD_FILE, KEYWAY_LAB_MASTER,
# KEYWAY_LAB_NODES, KEYWAY_LAB_SENTINELS, KEYWAY_LAB_MASTER_NAME, KEYWAY_LAB_ADMIN.
# Sets LAB_PID; call stop_lab (from an EXIT trap) to stop it.
LAB_PID=""
start_lab() {
  local dir="$1" keyway
  shift
  keyway="$(keyway_bin)"
  mkdir -p "$dir"
  setsid "$keyway" lab --port 0 --env-file "$dir/lab.env" "$@" >"$dir/lab.out" 2>"$dir/lab.log" </dev/null &
  LAB_PID=$!
  if ! wait_for_file "$dir/lab.env" 60 "$LAB_PID"; then
    tail -n 20 "$dir/lab.out" "$dir/lab.log" >&2 || true
    die "keyway lab wrote no $dir/lab.env (does this keyway have lab --env-file?)"
  fi
  sleep 0.2
  # shellcheck source=/dev/null
  . "$dir/lab.env"
  if [ -z "${KEYWAY_LAB_PORT:-}" ] || [ -z "${KEYWAY_LAB_PASSWORD_FILE:-}" ]; then
    die "$dir/lab.env lacks KEYWAY_LAB_PORT or KEYWAY_LAB_PASSWORD_FILE"
  fi
  note "lab: endpoint 127.0.0.1:$KEYWAY_LAB_PORT, master ${KEYWAY_LAB_MASTER:-?}, sentinels ${KEYWAY_LAB_SENTINELS:-none}, admin ${KEYWAY_LAB_ADMIN:-none}"
}

stop_lab() {
  [ -n "$LAB_PID" ] || return 0
  if kill -0 "$LAB_PID" 2>/dev/null; then
    kill -TERM "$LAB_PID" 2>/dev/null || true
    local _i
    for _i in $(seq 50); do
      kill -0 "$LAB_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$LAB_PID" 2>/dev/null && kill -KILL -- "-$LAB_PID" 2>/dev/null
  fi
  wait "$LAB_PID" 2>/dev/null || true
  LAB_PID=""
}

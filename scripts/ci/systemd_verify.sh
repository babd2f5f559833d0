#!/usr/bin/env bash
# CI check of the systemd units (deploy/systemd/): `systemd-analyze verify` on
# keyway.service (Type=notify) and keyway-notify-reload.service
# (Type=notify-reload), failing on ANY line it prints (verify exits 0 on many
# warnings, such as an unknown key, so its exit status alone proves nothing).
#
# - Installs systemd with apt when systemd-analyze is missing.
# - The units name /usr/local/bin/keyway; verify needs every Exec binary to
#   exist, so they are checked from a copy that names a stub in a temp dir.
# - Type=notify-reload and ReloadSignal= need systemd >= 253. Where the
#   installed systemd-analyze is older (Debian 12 has 252), the script unpacks
#   systemd-analyze 254 from Debian's bookworm-backports into a temp dir (apt
#   download + dpkg-deb -x, nothing installed on the system) and verifies both
#   units with it as well. KEYWAY_SYSTEMD_ANALYZE=/path/to/systemd-analyze
#   (>= 253) skips that download.
# - Prints the offline `systemd-analyze security` exposure score (information).
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh
source "$(dirname "$0")/lib.sh"

apt_install systemd-analyze:systemd

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keyway-systemd.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/units" "$WORK/bin"
printf '#!/bin/sh\nexit 0\n' >"$WORK/bin/keyway"
chmod 0755 "$WORK/bin/keyway"
UNITS=(keyway.service keyway-notify-reload.service)
for unit in "${UNITS[@]}"; do
  src="$REPO_ROOT/deploy/systemd/$unit"
  [ -f "$src" ] || die "missing $src"
  grep -q '/usr/local/bin/keyway ' "$src" || die "$unit does not run /usr/local/bin/keyway"
  sed "s#/usr/local/bin/keyway #$WORK/bin/keyway #g" "$src" >"$WORK/units/$unit"
done

version_of() { "$@" --version | sed -nE '1s/^systemd ([0-9]+).*/\1/p'; }

# verify LABEL UNIT... with the analyzer in ANALYZE (an array: command + env).
failures=0
verify() {
  local label="$1" unit out
  shift
  for unit in "$@"; do
    out="$("${ANALYZE[@]}" verify --man=no "$WORK/units/$unit" 2>&1)" || true
    # Keep the rc aside: any output at all is a failure.
    if [ -n "$out" ]; then
      printf '%s\n' "$out" | sed "s#$WORK/units/#deploy/systemd/#g; s#$WORK/bin/keyway#/usr/local/bin/keyway#g" >&2
      note "FAIL  $unit ($label): systemd-analyze verify printed the lines above"
      failures=$((failures + 1))
    else
      note "ok    $unit ($label): verify printed nothing"
    fi
  done
}

section "systemd-analyze verify"
ANALYZE=(systemd-analyze)
system_version="$(version_of systemd-analyze)"
note "installed systemd-analyze: systemd $system_version"

# An analyzer that knows Type=notify-reload (>= 253).
NEW=()
if [ -n "${KEYWAY_SYSTEMD_ANALYZE:-}" ]; then
  NEW=("$KEYWAY_SYSTEMD_ANALYZE")
elif [ "$system_version" -ge 253 ]; then
  NEW=(systemd-analyze)
else
  # shellcheck source=/dev/null
  codename="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
  [ "$codename" = bookworm ] ||
    die "systemd $system_version < 253 cannot verify Type=notify-reload, and no backport is known for '$codename': set KEYWAY_SYSTEMD_ANALYZE to a systemd-analyze >= 253"
  note "fetching systemd-analyze from bookworm-backports into $WORK (not installed)"
  apt_dir="$WORK/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" "$apt_dir/root"
  printf 'deb http://deb.debian.org/debian bookworm-backports main\n' >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" -qq update >/dev/null || die "apt-get update (bookworm-backports) failed"
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download \
    systemd/bookworm-backports libsystemd-shared/bookworm-backports libsystemd0/bookworm-backports >/dev/null) ||
    die "apt-get download of systemd from bookworm-backports failed"
  for deb in "$apt_dir"/debs/*.deb; do dpkg-deb -x "$deb" "$apt_dir/root"; done
  shared="$(find "$apt_dir/root" -name 'libsystemd-shared-*.so' -print -quit)"
  [ -n "$shared" ] || die "no libsystemd-shared in the backported packages"
  libs="$(dirname "$shared")" # usr/lib/<multiarch>/systemd
  NEW=(env "LD_LIBRARY_PATH=$libs:$(dirname "$libs")" "$apt_dir/root/usr/bin/systemd-analyze")
fi

if [ "$system_version" -ge 253 ]; then
  verify "systemd $system_version" "${UNITS[@]}"
else
  # The installed analyzer cannot know notify-reload: it checks the notify unit.
  verify "systemd $system_version" keyway.service
fi
if [ "${NEW[*]}" != systemd-analyze ]; then
  new_version="$(version_of "${NEW[@]}")"
  if [ -z "$new_version" ] || [ "$new_version" -lt 253 ]; then
    die "systemd-analyze ${NEW[*]} is not >= 253 (got '$new_version')"
  fi
  ANALYZE=("${NEW[@]}")
  verify "systemd $new_version" "${UNITS[@]}"
fi

section "systemd-analyze security --offline (exposure score, information only)"
for unit in "${UNITS[@]}"; do
  report="$("${ANALYZE[@]}" security --offline=true --no-pager "$WORK/units/$unit" 2>&1)" || true
  printf '%s\n' "$report" | grep -E '^(✗|→)' | sed "s#$WORK/units/##" || true
done

[ "$failures" -eq 0 ] || die "$failures unit verification(s) printed warnings"
section "OK"

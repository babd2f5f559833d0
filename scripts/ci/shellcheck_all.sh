#!/usr/bin/env bash
# Runs shellcheck on every shell script under scripts/ and deploy/: the *.sh
# files and the extension-less files whose first line names a shell. Any
# finding fails. Installs the shellcheck package with apt when it is missing.
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

apt_install shellcheck:shellcheck
files=()
while IFS= read -r -d '' f; do
  case "$f" in
    *.sh) files+=("$f") ;;
    */*.*) ;;
    *) if head -n 1 "$f" | grep -qE '^#!.*[/ ](ba|da)?sh$'; then files+=("$f"); fi ;;
  esac
done < <(find scripts deploy -type f -print0 | sort -z)
[ "${#files[@]}" -gt 0 ] || die "no shell script found"
shellcheck --version | sed -n 2p
printf '  %s\n' "${files[@]}"
shellcheck -x "${files[@]}" || die "shellcheck reported problems"
note "${#files[@]} scripts clean"

#!/usr/bin/env bash
# Install the Debian packages the test suite needs (PostgreSQL server, Chromium), only when missing.
#
# Usage: bash scripts/ensure_system_deps.sh [postgresql] [chromium]
#   postgresql  needs /usr/lib/postgresql/*/bin/initdb   -> apt package postgresql (brings the server)
#   chromium    needs /usr/bin/chromium + fonts           -> chromium fonts-dejavu-core fonts-liberation
# Idempotent and silent when everything is present; runs `apt-get update` once, then
# `apt-get install -y --no-install-recommends`; uses sudo only when not root. Browsers come from apt
# only (never `playwright install`). Exits non-zero with a message on any failure.
set -euo pipefail

me="ensure_system_deps"
die() { echo "$me: error: $*" >&2; exit 1; }

[ $# -gt 0 ] || die "usage: $0 [postgresql] [chromium]"

have_pkg() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}
have_initdb() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()
for want in "$@"; do
    case "$want" in
        postgresql)
            have_initdb || missing+=(postgresql)
            ;;
        chromium)
            [ -x /usr/bin/chromium ] || missing+=(chromium)
            for font in fonts-dejavu-core fonts-liberation; do
                have_pkg "$font" || missing+=("$font")
            done
            ;;
        *)
            die "unknown dependency '$want' (known: postgresql chromium)"
            ;;
    esac
done

[ ${#missing[@]} -eq 0 ] && exit 0

command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} with your system's package manager"

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "not root and sudo is not available; run as root: apt-get install ${missing[*]}"
    sudo=(sudo)
fi

# Wait for a concurrent apt/dpkg run instead of failing at once.
apt_opts=(-q -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

echo "$me: installing ${missing[*]}" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update >&2 \
    || die "apt-get update failed"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends \
    "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"

for want in "$@"; do
    case "$want" in
        postgresql) have_initdb || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb" ;;
        chromium) [ -x /usr/bin/chromium ] || die "chromium installed but /usr/bin/chromium is missing" ;;
    esac
done
echo "$me: done" >&2

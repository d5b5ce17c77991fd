#!/usr/bin/env bash
# scripts/setup.sh — prepare a Debian 12 machine to build, test and demo pg_dtx.
#
# Idempotent; safe to run again and again.  Run it as root, or as a user who
# may use sudo (it then calls sudo for the privileged steps only).
#
#   1. installs the Debian packages listed below, but only those missing;
#   2. builds pg_dtx with PGXS as the invoking user;
#   3. installs it into that PostgreSQL with root rights.
#
# Environment:
#   PG_CONFIG   pg_config of the target PostgreSQL
#               (default /usr/lib/postgresql/15/bin/pg_config)
#
# Installing postgresql-15 makes Debian create and start a cluster "15/main"
# on port 5432.  pg_dtx never uses it: the tests and the demo run their own
# throwaway clusters on other ports, so we leave it alone.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
LOG=${TMPDIR:-/tmp}/pg_dtx-setup.$(id -un).log

# Debian 12 (bookworm) package names.  Notes:
#  - contrib ships inside postgresql-15 (postgresql-contrib-15 is only a
#    virtual package it provides), so it is not listed;
#  - postgresql-server-dev-15 brings pg_config, PGXS, clang and llvm (for the
#    JIT bitcode PGXS builds);
#  - postgresql-client-15 (a dependency) ships pg_regress,
#    pg_isolation_regress, isolationtester and PostgreSQL::Test::Cluster;
#  - prove and Test::More come with perl; the TAP modules need IPC::Run;
#  - python3 serves HTTP in the outbox tests, redis-server is the
#    alternative the benchmarks compare against.
PACKAGES=(
    postgresql-15
    postgresql-server-dev-15
    libpq-dev
    libcurl4-openssl-dev
    make
    gcc
    perl
    libipc-run-perl
    ca-certificates
    python3
    redis-server
)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Run a command with root rights: directly when we are root (sudo need not
# exist then), through sudo otherwise.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root rights for: $* (run as root, or install sudo)"
    fi
}

# Run a command with its output appended to $LOG; on failure show the tail.
logged() {
    local what=$1
    shift
    printf '\n### %s: %s\n' "$(date '+%F %T')" "$*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        printf 'setup: error: %s failed; last lines of %s:\n' "$what" "$LOG" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

is_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

# --- 1. packages -------------------------------------------------------------
command -v dpkg-query >/dev/null 2>&1 || die "this script expects Debian (dpkg-query not found)"
: >"$LOG"

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} > 0)); then
    say "installing ${missing[*]} (log: $LOG)"
    logged "apt-get update" as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get update -q
    logged "apt-get install" as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "packages already installed"
fi

# --- 2. build (as the invoking user) -------------------------------------------
[[ -x $PG_CONFIG ]] || die "pg_config not found at $PG_CONFIG (set PG_CONFIG)"
say "building pg_dtx against $("$PG_CONFIG" --version)"
logged "make" make -C "$ROOT" PG_CONFIG="$PG_CONFIG"

# Compiler warnings matter: show them, without the rest of the build noise.
if grep -q 'warning:' "$LOG"; then
    say "compiler warnings:"
    grep -A3 'warning:' "$LOG" | sed 's/^/  /'
fi

# --- 3. install (as root) ------------------------------------------------------
logged "make install" as_root make -C "$ROOT" PG_CONFIG="$PG_CONFIG" install
say "installed pg_dtx into $("$PG_CONFIG" --pkglibdir) and $("$PG_CONFIG" --sharedir)/extension"

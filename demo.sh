#!/usr/bin/env bash
# demo.sh — see pg_dtx at work, from a fresh Debian 12 machine.
#
# 1. scripts/setup.sh: installs what is missing, builds and installs pg_dtx
#    (root or sudo needed for that part);
# 2. demo/run-demo, as an unprivileged user (as root: the system user
#    "pgdtx", in a copy of this tree; see scripts/as-user.sh): three
#    throwaway clusters on 127.0.0.1, demo/demo.sql run against the
#    coordinator, everything removed at the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/setup.sh
exec scripts/as-user.sh demo/run-demo "$@"

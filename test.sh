#!/usr/bin/env bash
# test.sh — the whole pg_dtx test suite, from a fresh Debian 12 machine.
#
#   ./test.sh [FILTER]
#
# 1. scripts/setup.sh: installs what is missing, builds and installs pg_dtx
#    (root or sudo needed for that part);
# 2. test/run-tests, as an unprivileged user (as root: the system user
#    "pgdtx", in a copy of this tree; see scripts/as-user.sh).
#
# FILTER, optional, is passed to test/run-tests: only tests whose name
# contains it run.  The last line printed is "N passed, N failed"; the exit
# status is non-zero when a test failed or none ran.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/setup.sh
exec scripts/as-user.sh test/run-tests "$@"

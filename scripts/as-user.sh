#!/usr/bin/env bash
# scripts/as-user.sh — run one of the repository's commands as an
# unprivileged user (initdb and postgres refuse to run as root).
#
#   scripts/as-user.sh COMMAND [ARGS...]      e.g. scripts/as-user.sh test/run-tests 001_
#
# COMMAND is a path relative to the repository root.
#
# - Not root: runs COMMAND in place, as the current user.
# - Root: creates the system user $PG_DTX_USER (default "pgdtx") if missing,
#   copies the working tree (without .git and build products) into a fresh
#   directory under /tmp owned by that user, and runs COMMAND there with
#   runuser.  The copy is needed because the checkout may live where that
#   user cannot read (under /root, say).  The copy, which also holds the
#   run's TMPDIR, is removed afterwards when COMMAND succeeds and kept when
#   it fails (COMMAND prints where its logs are).
#
# The exit status is COMMAND's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_USER=${PG_DTX_USER:-pgdtx}

if (($# < 1)); then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
cmd=$1
shift

# --- not root: run in place --------------------------------------------------
if [[ $EUID -ne 0 ]]; then
    cd "$ROOT"
    exec "./$cmd" "$@"
fi

# --- root: make sure the unprivileged user exists ------------------------------
if ! id -u "$RUN_USER" >/dev/null 2>&1; then
    useradd --system --create-home --shell /bin/bash \
        --comment "pg_dtx tests and demo" "$RUN_USER"
fi
run_home=$(getent passwd "$RUN_USER" | cut -d: -f6)

# --- root: copy the working tree -----------------------------------------------
# Build products and test output are left behind: the extension is installed
# already (scripts/setup.sh), the copy only needs sources, tests and scripts.
is_build_product() {
    case $1 in
        .git | .git/* | */.git/*) return 0 ;;
        *.o | *.so | *.bc | *.a) return 0 ;;
        tmp_check | tmp_check/* | */tmp_check/*) return 0 ;;
        results | results/* | log | log/* | output_iso | output_iso/*) return 0 ;;
        regression.diffs | regression.out) return 0 ;;
    esac
    return 1
}

# Print, NUL-separated, the files to copy (paths relative to $ROOT).
list_files() {
    # In a git checkout: tracked files plus untracked, not ignored ones (so a
    # fresh clone and a work in progress both copy what they should).
    # safe.directory: root reading a checkout owned by someone else.
    if [[ -e $ROOT/.git ]] && command -v git >/dev/null 2>&1 &&
        git -c safe.directory="$ROOT" -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
        local f
        git -c safe.directory="$ROOT" -C "$ROOT" ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do
                # skip files deleted from the working tree but still in the index
                [[ -e $ROOT/$f || -L $ROOT/$f ]] || continue
                is_build_product "$f" && continue
                printf '%s\0' "$f"
            done
    else
        (cd "$ROOT" && find . -mindepth 1 \( -type f -o -type l \) -printf '%P\0') |
            while IFS= read -r -d '' f; do
                is_build_product "$f" && continue
                printf '%s\0' "$f"
            done
    fi
}

work=$(mktemp -d /tmp/pg_dtx.XXXXXX)
mkdir "$work/src" "$work/tmp"
list_files | tar -C "$ROOT" --null -T - -cf - | tar -C "$work/src" -xf -
chown -R "$RUN_USER:" "$work"
chmod 0755 "$work"

# --- root: run the command as the unprivileged user ----------------------------
# cd first: a current directory the user cannot read breaks initdb.
# TMPDIR points into the copy so that everything the run leaves is in one place.
cd "$work/src"
status=0
runuser -u "$RUN_USER" -- env \
    HOME="$run_home" USER="$RUN_USER" LOGNAME="$RUN_USER" TMPDIR="$work/tmp" \
    "./$cmd" "$@" || status=$?
cd /

# Nothing is printed after the command's own output: its last line (the test
# summary) must stay the last line.  On failure the command has already
# printed where its logs are, which is inside $work.
if ((status == 0)); then
    rm -rf "$work"
fi
exit "$status"

# scripts/clusters.sh — sourced by demo/run-demo and test/bench/*: throwaway
# PostgreSQL clusters on 127.0.0.1 with pg_dtx preloaded.
#
# Before sourcing: CLUSTER_DIR (an empty directory for data, sockets, logs),
# PORT (first port to try), PATH with the PostgreSQL bin directory first.
# Provides:
#   start_cluster NAME [CONF_LINE...]   initdb + start; port in ${port[NAME]},
#                                       data in $CLUSTER_DIR/NAME, log in $CLUSTER_DIR/NAME.log
#   stop_clusters                       stop every cluster started (fast, else immediate)
#   psql_at NAME [PSQL_ARGS...]         psql -X -q as postgres to NAME, stop at the first error

declare -A port=()
CLUSTERS=()

# True when something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The next free port at or after $PORT; advances $PORT past it.
next_free_port() {
    while port_in_use "$PORT"; do
        PORT=$((PORT + 1))
        ((PORT < 65535)) || { echo "no free port found" >&2; return 1; }
    done
    printf '%s\n' "$PORT"
    PORT=$((PORT + 1))
}

start_cluster() {
    local n=$1 data=$CLUSTER_DIR/$1 line
    shift
    port[$n]=$(next_free_port)
    PORT=$((port[$n] + 1))
    initdb -D "$data" -U postgres -A trust -E UTF8 --no-sync --no-instructions \
        >"$CLUSTER_DIR/$n.initdb.log" 2>&1 || {
        cat "$CLUSTER_DIR/$n.initdb.log" >&2
        echo "initdb failed for $n" >&2
        return 1
    }
    {
        printf '\n# pg_dtx throwaway cluster (%s)\n' "$n"
        printf "port = %s\nlisten_addresses = '127.0.0.1'\n" "${port[$n]}"
        printf "unix_socket_directories = '%s'\n" "$CLUSTER_DIR"
        printf "shared_preload_libraries = 'pg_dtx'\nmax_prepared_transactions = 20\n"
        printf "cluster_name = 'pg_dtx_%s'\n" "$n"
        for line in "$@"; do printf '%s\n' "$line"; done
    } >>"$data/postgresql.conf"
    pg_ctl -D "$data" -l "$CLUSTER_DIR/$n.log" -w -t 60 start >/dev/null || {
        echo "cluster $n did not start (port ${port[$n]})" >&2
        return 1
    }
    CLUSTERS+=("$n")
}

stop_clusters() {
    local n
    for n in "${CLUSTERS[@]}"; do
        if [[ -f $CLUSTER_DIR/$n/postmaster.pid ]]; then
            pg_ctl -D "$CLUSTER_DIR/$n" stop -m fast -w -t 30 >/dev/null 2>&1 ||
                pg_ctl -D "$CLUSTER_DIR/$n" stop -m immediate -w -t 30 >/dev/null 2>&1 || true
        fi
    done
}

psql_at() {
    local n=$1
    shift
    psql -X -q -h 127.0.0.1 -p "${port[$n]}" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"
}

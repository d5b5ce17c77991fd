/* pg_dtx--1.0.sql: pg_dtx 1.0, installed by CREATE EXTENSION pg_dtx */

\echo Use "CREATE EXTENSION pg_dtx" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Participants: foreign servers of wrapper pg_dtx (or postgres_fdw)
-- ---------------------------------------------------------------------------

CREATE FUNCTION dtx.fdw_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'fdw_validator'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER pg_dtx VALIDATOR dtx.fdw_validator;

COMMENT ON FOREIGN DATA WRAPPER pg_dtx IS
  'participants of pg_dtx global transactions (servers take libpq options; user mappings take user and password)';

-- ---------------------------------------------------------------------------
-- Remote execution inside the local transaction
-- ---------------------------------------------------------------------------

CREATE FUNCTION dtx.exec(server name, sql text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'dtx_exec'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dtx.exec(name, text) IS
  'run SQL on a participant inside the current transaction; returns the rows affected by its last statement';

CREATE FUNCTION dtx.query(server name, sql text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'dtx_query'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dtx.query(name, text) IS
  'run a query on a participant inside the current transaction; rows typed by the column definition list';

CREATE FUNCTION dtx.connections(
    OUT server_oid oid, OUT server text, OUT user_oid oid,
    OUT remote_pid integer, OUT in_transaction boolean, OUT healthy boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'dtx_connections'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION dtx.connections() IS
  'connections this backend holds to participants';

CREATE FUNCTION dtx.disconnect(server name DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'dtx_disconnect'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION dtx.disconnect(name) IS
  'close this backend''s idle connections to a participant (or to all); returns how many were closed';

CREATE FUNCTION dtx.probe(server name DEFAULT NULL,
    OUT server text, OUT reachable boolean, OUT max_prepared_transactions integer,
    OUT server_version text, OUT error text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'dtx_probe'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION dtx.probe(name) IS
  'connect to participants now: reachable?, max_prepared_transactions, version, or the error';

CREATE VIEW dtx.participants AS
SELECT s.srvname AS server,
       w.fdwname AS wrapper,
       o.host,
       o.port,
       o.dbname,
       EXISTS (SELECT 1 FROM dtx.connections() c
                WHERE c.server_oid = s.oid AND c.user_oid = current_user::regrole::oid)
         AS connected,
       EXISTS (SELECT 1 FROM dtx.connections() c
                WHERE c.server_oid = s.oid AND c.user_oid = current_user::regrole::oid
                  AND c.in_transaction)
         AS in_transaction
  FROM pg_foreign_server s
  JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
  LEFT JOIN LATERAL (
       SELECT max(option_value) FILTER (WHERE option_name IN ('host', 'hostaddr')) AS host,
              max(option_value) FILTER (WHERE option_name = 'port') AS port,
              max(option_value) FILTER (WHERE option_name = 'dbname') AS dbname
         FROM pg_options_to_table(s.srvoptions)) o ON true
 WHERE w.fdwname IN ('pg_dtx', 'postgres_fdw');

COMMENT ON VIEW dtx.participants IS
  'servers usable as participants; connected = this backend holds a connection (use dtx.probe() for reachability)';

GRANT USAGE ON SCHEMA dtx TO PUBLIC;
GRANT SELECT ON dtx.participants TO PUBLIC;

-- ---------------------------------------------------------------------
-- Atomic commit: decisions, in-doubt transactions, recovery, counters
-- ---------------------------------------------------------------------

-- One row per global transaction that prepared on its participants,
-- inserted in the coordinator's local transaction: it exists if and only
-- if the global transaction committed.  incarnation identifies the run of
-- the server (it changes at every restart), because a full xid that was
-- never flushed before a crash can be handed out again.  The recovery worker deletes rows
-- once no participant holds their prepared transactions.
CREATE TABLE dtx.decisions (
    fxid         xid8        PRIMARY KEY,
    incarnation  bigint      NOT NULL,
    participants oid[]       NOT NULL,
    decided_at   timestamptz NOT NULL
);
REVOKE ALL ON dtx.decisions FROM PUBLIC;

COMMENT ON TABLE dtx.decisions IS
  'commit decisions of global transactions still being finished (coordinator full xid, participant servers)';

CREATE FUNCTION dtx.in_doubt_list(
    OUT server text, OUT gid text, OUT prepared_at timestamptz,
    OUT coordinator_xid xid8, OUT decision text, OUT owner text,
    OUT action text, OUT error text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'dtx_in_doubt_list'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE VIEW dtx.in_doubt AS
SELECT server, gid, prepared_at, now() - prepared_at AS age,
       coordinator_xid, decision, owner, error
  FROM dtx.in_doubt_list();

COMMENT ON VIEW dtx.in_doubt IS
  'prepared transactions of this database on every participant, with the decision recovery applies; error = participant unreachable';

CREATE FUNCTION dtx.recover(server name DEFAULT NULL)
RETURNS TABLE (server text, gid text, prepared_at timestamptz,
               coordinator_xid xid8, decision text, owner text,
               action text, error text)
AS 'MODULE_PATHNAME', 'dtx_recover'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dtx.recover(name) IS
  'resolve in-doubt transactions now (one participant or all); returns what it did';

CREATE FUNCTION dtx.xa_recover(server name)
RETURNS TABLE (gid text, prepared_at timestamptz, owner text, ours boolean,
               coordinator_xid xid8, decision text)
AS 'MODULE_PATHNAME', 'dtx_xa_recover'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dtx.xa_recover(name) IS
  'every prepared transaction in the participant database; for ours, the recorded decision';

CREATE FUNCTION dtx.xa_commit(server name, gid text, force boolean DEFAULT false)
RETURNS text
AS 'MODULE_PATHNAME', 'dtx_xa_commit'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION dtx.xa_rollback(server name, gid text, force boolean DEFAULT false)
RETURNS text
AS 'MODULE_PATHNAME', 'dtx_xa_rollback'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dtx.xa_commit(name, text, boolean) IS
  'COMMIT PREPARED one of our GIDs by hand; refused if the recorded decision is abort, unless forced; logged';
COMMENT ON FUNCTION dtx.xa_rollback(name, text, boolean) IS
  'ROLLBACK PREPARED one of our GIDs by hand; refused if the recorded decision is commit, unless forced; logged';

CREATE FUNCTION dtx.stats(
    OUT one_phase_commits bigint, OUT prepared bigint, OUT committed bigint,
    OUT aborted bigint, OUT phase2_failures bigint,
    OUT recovered_commits bigint, OUT recovered_aborts bigint,
    OUT decisions_deleted bigint)
AS 'MODULE_PATHNAME', 'dtx_stats'
LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE VIEW dtx.stats AS SELECT * FROM dtx.stats();

COMMENT ON VIEW dtx.stats IS
  'cluster-wide counters of global transactions since the server started';

-- Resolution and the in-doubt list connect with other users' mappings:
-- administrators only, unless granted.
REVOKE ALL ON FUNCTION dtx.in_doubt_list(), dtx.recover(name),
    dtx.xa_recover(name), dtx.xa_commit(name, text, boolean),
    dtx.xa_rollback(name, text, boolean) FROM PUBLIC;
GRANT SELECT ON dtx.stats TO PUBLIC;

-- ---------------------------------------------------------------------
-- Leases and fencing tokens
-- ---------------------------------------------------------------------

-- The durable state of the token counter of this database, one row,
-- updated in place (WAL-logged and flushed) by the server only:
-- reserved   no token above it has been handed out
-- max_ttl_us the longest TTL granted
-- horizon    every lease granted so far expires by then
CREATE TABLE dtx.lease_tokens (
    reserved   bigint      NOT NULL,
    max_ttl_us bigint      NOT NULL,
    horizon    timestamptz NOT NULL
);
INSERT INTO dtx.lease_tokens VALUES (0, 0, '-infinity');
REVOKE ALL ON dtx.lease_tokens FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('dtx.lease_tokens', '');

COMMENT ON TABLE dtx.lease_tokens IS
  'durable state of the fencing token counter: highest reserved token, longest TTL, expiry horizon (server-maintained)';

-- A named row type rather than OUT parameters: the executor then finds
-- the result's descriptor in the type cache instead of building it from
-- pg_proc at every execution.
CREATE TYPE dtx.lease AS (token bigint, expires_at timestamptz);

CREATE FUNCTION dtx.lease_acquire(name text, ttl interval,
    wait interval DEFAULT '0', holder text DEFAULT NULL,
    session boolean DEFAULT false)
RETURNS dtx.lease
AS 'MODULE_PATHNAME', 'dtx_lease_acquire'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dtx.lease_acquire(text, interval, interval, text, boolean) IS
  'acquire a lease for ttl, waiting up to wait (FIFO); returns its fencing token and expiry, or NULLs if not acquired';

CREATE FUNCTION dtx.lease_renew(name text, token bigint, ttl interval)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'dtx_lease_renew'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dtx.lease_renew(text, bigint, interval) IS
  'extend a lease held with token to now + ttl; SQLSTATE DX011 if it is lost or expired, 42501 if held by a role whose privileges the caller lacks';

CREATE FUNCTION dtx.lease_release(name text, token bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'dtx_lease_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dtx.lease_release(text, bigint) IS
  'release a lease held with token, handing it to the next waiter; false if it was not held with that token (or had expired); 42501 if held by a role whose privileges the caller lacks';

CREATE FUNCTION dtx.lease_break(name text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'dtx_lease_break'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dtx.lease_break(text) IS
  'administrator: take a lease from its holder (next waiter gets it); returns a fresh token above the broken one, or NULL if not held';

REVOKE ALL ON FUNCTION dtx.lease_break(text) FROM PUBLIC;

CREATE FUNCTION dtx.leases_list(
    OUT name text, OUT state text, OUT holder text, OUT token bigint,
    OUT acquired_at timestamptz, OUT expires_at timestamptz,
    OUT waiters integer, OUT pid integer, OUT role name)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'dtx_leases'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW dtx.leases AS
SELECT name, holder, role, token, acquired_at, expires_at, waiters, state, pid
  FROM dtx.leases_list();

COMMENT ON VIEW dtx.leases IS
  'leases of this database that are held, being handed over, or waited for; the token only for roles with the privileges of the holding role';

CREATE FUNCTION dtx.lease_status_get(
    OUT next_token bigint, OUT reserved_through bigint,
    OUT horizon timestamptz, OUT max_ttl interval,
    OUT grace_until timestamptz, OUT reservations bigint,
    OUT leases_in_use bigint, OUT max_leases integer,
    OUT waiter_wakeups bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'dtx_lease_status'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE VIEW dtx.lease_status AS SELECT * FROM dtx.lease_status_get();

COMMENT ON VIEW dtx.lease_status IS
  'token counter of this database (next token, reserved range, horizon, grace period) and the use of the lease table';

GRANT SELECT ON dtx.leases, dtx.lease_status TO PUBLIC;

-- Fenced tables

-- The highest token accepted per (table, resource) by rule monotonic;
-- written by the trigger in the writing transaction.
CREATE TABLE dtx.fence_marks (
    relid      regclass    NOT NULL,   -- regclass: pg_dump keeps it by name
    resource   text        COLLATE "C" NOT NULL,
    token      bigint      NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (relid, resource)
);
REVOKE ALL ON dtx.fence_marks FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('dtx.fence_marks', '');

COMMENT ON TABLE dtx.fence_marks IS
  'highest fencing token accepted per fenced table and resource (rule monotonic)';

CREATE FUNCTION dtx.fence_check()
RETURNS trigger
AS 'MODULE_PATHNAME', 'dtx_fence_check'
LANGUAGE C;

COMMENT ON FUNCTION dtx.fence_check() IS
  'trigger of fenced tables (installed by dtx.fence_table)';

CREATE FUNCTION dtx.fence_table(tbl regclass, resource_column name DEFAULT NULL,
    token_column name DEFAULT 'fence_token', rule text DEFAULT 'monotonic')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ oid;
    kind "char";
BEGIN
    IF tbl IS NULL OR token_column IS NULL OR rule IS NULL THEN
        RAISE EXCEPTION 'tbl, token_column and rule must not be null'
              USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF rule NOT IN ('monotonic', 'holder') THEN
        RAISE EXCEPTION 'unknown fencing rule "%"', rule
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Use monotonic (a token lower than the highest seen is rejected) or holder (the token must hold the lease named by the resource).';
    END IF;
    SELECT relkind INTO kind FROM pg_class WHERE oid = tbl;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tbl USING ERRCODE = 'wrong_object_type';
    END IF;
    SELECT atttypid INTO typ FROM pg_attribute
     WHERE attrelid = tbl AND attname = token_column AND attnum > 0 AND NOT attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no token column "%"', tbl, token_column
              USING ERRCODE = 'undefined_column',
                    HINT = format('ALTER TABLE %s ADD COLUMN %I bigint;', tbl, token_column);
    END IF;
    IF typ <> 'bigint'::regtype THEN
        RAISE EXCEPTION 'token column "%" of % is of type %, not bigint', token_column, tbl, typ::regtype
              USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF resource_column IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pg_attribute
         WHERE attrelid = tbl AND attname = resource_column AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'table % has no resource column "%"', tbl, resource_column
              USING ERRCODE = 'undefined_column';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = 'dtx_fence') THEN
        EXECUTE format('DROP TRIGGER dtx_fence ON %s', tbl);
    END IF;
    EXECUTE format('CREATE TRIGGER dtx_fence BEFORE INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION dtx.fence_check(%L, %L, %L, %L)',
                   tbl, rule, token_column, coalesce(resource_column, ''), tbl::text);
END
$$;

COMMENT ON FUNCTION dtx.fence_table(regclass, name, name, text) IS
  'fence a table: writes with a stale fencing token are rejected (SQLSTATE DX010)';

CREATE FUNCTION dtx.unfence_table(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'tbl must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = 'dtx_fence') THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TRIGGER dtx_fence ON %s', tbl);
    RETURN true;
END
$$;

COMMENT ON FUNCTION dtx.unfence_table(regclass) IS
  'remove the fencing trigger of a table (its high-water marks are kept); false if it was not fenced';

-- ---------------------------------------------------------------------------
-- Transactional outbox: sinks, routes, the hot queue, dead letters, inbox
-- ---------------------------------------------------------------------------

-- Where messages go.  The columns after "owner" are the dispatcher's state.
CREATE TABLE dtx.outbox_sink (
    sink_id     int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text COLLATE "C" NOT NULL UNIQUE,
    kind        text NOT NULL CHECK (kind IN ('postgres', 'http', 'notify')),
    options     jsonb NOT NULL,
    owner       regrole NOT NULL DEFAULT current_user::regrole,
    created_at  timestamptz NOT NULL DEFAULT now(),
    breaker     text NOT NULL DEFAULT 'closed'
                CHECK (breaker IN ('closed', 'open', 'half-open')),
    breaker_until timestamptz,
    failures    int NOT NULL DEFAULT 0,
    delivered   bigint NOT NULL DEFAULT 0,
    last_error  text,
    last_error_at timestamptz
);
REVOKE ALL ON dtx.outbox_sink FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('dtx.outbox_sink', '');

-- Which topics go to which sink; '*' in a pattern matches any characters.
CREATE TABLE dtx.outbox_route (
    topic_pattern text COLLATE "C" NOT NULL,
    sink_id     int NOT NULL REFERENCES dtx.outbox_sink ON DELETE CASCADE,
    like_pattern text COLLATE "C" NOT NULL GENERATED ALWAYS AS
        (replace(replace(replace(replace(topic_pattern, '\', '\\'), '%', '\%'),
                         '_', '\_'), '*', '%')) STORED,
    PRIMARY KEY (topic_pattern, sink_id)
);
REVOKE ALL ON dtx.outbox_route FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('dtx.outbox_route', '');

CREATE SEQUENCE dtx.outbox_message_id_seq;
SELECT pg_catalog.pg_extension_config_dump('dtx.outbox_message_id_seq', '');

-- The hot table: one row per (message, sink) not yet delivered.  sink_id 0
-- holds messages no route matched when they were sent.
CREATE TABLE dtx.outbox (
    message_id  bigint NOT NULL,
    sink_id     int NOT NULL,
    topic       text COLLATE "C" NOT NULL,
    key         text COLLATE "C",
    payload     jsonb NOT NULL,
    headers     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    int NOT NULL DEFAULT 0,		-- finished, failed attempts
    next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
    crashes     int NOT NULL DEFAULT 0,		-- 1 = suspect, 1 + n = n solo crashes
    last_error  text,
    PRIMARY KEY (sink_id, message_id)
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0,
        autovacuum_vacuum_threshold = 2000, autovacuum_vacuum_insert_scale_factor = 0,
        autovacuum_vacuum_insert_threshold = 10000);
CREATE INDEX outbox_key_idx ON dtx.outbox (sink_id, key, message_id);	-- a key's head
-- No statistics on the columns the dispatcher looks up by: the queue's are
-- always stale, and an ANALYZE that saw one sink or one key (or none) made
-- plans scan the whole backlog per row.  The defaults keep the indexes.
ALTER TABLE dtx.outbox ALTER COLUMN sink_id SET STATISTICS 0,
                       ALTER COLUMN key SET STATISTICS 0;
REVOKE ALL ON dtx.outbox FROM PUBLIC;

-- The dispatcher's per-key order check: the oldest message_id of a key in a
-- sink, one descent of outbox_key_idx (src/outbox.c).  It reads the table
-- without a permission check, so it is not for PUBLIC.
CREATE FUNCTION dtx._outbox_key_head(sink_id int, key text) RETURNS bigint
AS 'MODULE_PATHNAME', 'dtx_outbox_key_head' LANGUAGE C STABLE STRICT PARALLEL SAFE
COST 100;	-- an index descent: the claim's cheaper conditions go first
REVOKE ALL ON FUNCTION dtx._outbox_key_head(int, text) FROM PUBLIC;
-- ... and whether a message is in the sink's batch on the wire (the
-- dispatcher's own memory; false in any other process)
CREATE FUNCTION dtx._outbox_on_the_wire(sink_id int, message_id bigint) RETURNS boolean
AS 'MODULE_PATHNAME', 'dtx_outbox_on_the_wire' LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
REVOKE ALL ON FUNCTION dtx._outbox_on_the_wire(int, bigint) FROM PUBLIC;
-- ... and whether an id is in a batch's ascending id list (binary search)
CREATE FUNCTION dtx._outbox_among(message_id bigint, ids bigint[]) RETURNS boolean
AS 'MODULE_PATHNAME', 'dtx_outbox_among' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
SELECT pg_catalog.pg_extension_config_dump('dtx.outbox', '');

-- Attempts in progress: one row per batch, from its claim to its outcome.
-- A row left behind is an attempt that crashed the dispatcher.
CREATE TABLE dtx.outbox_attempt (
    attempt_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sink_id     int NOT NULL,
    message_ids bigint[] NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE dtx.outbox_attempt ALTER COLUMN message_ids SET STORAGE EXTERNAL;	-- not compressed
REVOKE ALL ON dtx.outbox_attempt FROM PUBLIC;

CREATE TABLE dtx.outbox_dead (
    message_id  bigint NOT NULL,
    sink        text COLLATE "C" NOT NULL,
    topic       text COLLATE "C" NOT NULL,
    key         text COLLATE "C",
    payload     jsonb NOT NULL,
    headers     jsonb,
    created_at  timestamptz NOT NULL,
    attempts    int NOT NULL,
    reason      text NOT NULL,
    last_error  text,
    died_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, message_id)
);
REVOKE ALL ON dtx.outbox_dead FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('dtx.outbox_dead', '');

-- Delivered messages, kept dtx.outbox_keep_delivered (0: none kept)
CREATE TABLE dtx.outbox_delivered (
    message_id  bigint NOT NULL,
    sink_id     int NOT NULL,
    topic       text COLLATE "C" NOT NULL,
    key         text COLLATE "C",
    created_at  timestamptz NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT now(),
    attempts    int NOT NULL
);
CREATE INDEX outbox_delivered_at_idx ON dtx.outbox_delivered (delivered_at);
REVOKE ALL ON dtx.outbox_delivered FROM PUBLIC;

CREATE FUNCTION dtx.outbox_send(topic text, payload jsonb, key text DEFAULT NULL,
                                headers jsonb DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'dtx_outbox_send'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION dtx.outbox_send(text, jsonb, text, jsonb) FROM PUBLIC;

COMMENT ON FUNCTION dtx.outbox_send(text, jsonb, text, jsonb) IS
  'queue a message in the current transaction; delivered after commit to every sink routed for its topic';

-- A sink is delivered with its owner's user mapping and rights: only a role
-- with the privileges of a role may make it a sink's owner (sink_create
-- makes the caller the owner).
CREATE FUNCTION dtx._outbox_sink_owner_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pg_catalog.pg_has_role(NEW.owner::pg_catalog.oid, 'USAGE') THEN
        RAISE EXCEPTION 'permission denied to make role % the owner of sink "%"', NEW.owner, NEW.name
            USING ERRCODE = '42501', HINT = 'A sink belongs to the role that creates it.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER outbox_sink_owner BEFORE INSERT OR UPDATE OF owner ON dtx.outbox_sink
    FOR EACH ROW EXECUTE FUNCTION dtx._outbox_sink_owner_check();

-- dtx.sink_create's check of a postgres sink's server for the caller
CREATE FUNCTION dtx._outbox_check_server(server text) RETURNS void
AS 'MODULE_PATHNAME', 'dtx_outbox_check_server'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION dtx.sink_create(name text, kind text, options jsonb DEFAULT '{}')
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    known text[];
    k text;
    v jsonb;
    id int;
BEGIN
    IF name IS NULL OR name = '' OR kind IS NULL OR options IS NULL THEN
        RAISE EXCEPTION 'sink name, kind and options must not be null or empty'
            USING ERRCODE = '22004';
    END IF;
    IF jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'sink options must be a JSON object' USING ERRCODE = '22023';
    END IF;
    known := ARRAY['batch_size', 'max_attempts', 'backoff_base_ms', 'backoff_max_ms',
                   'breaker_threshold', 'breaker_cooldown_ms', 'timeout_ms'];
    IF kind = 'http' THEN
        known := known || ARRAY['url', 'headers', 'concurrency'];
        IF coalesce(options->>'url', '') !~ '^https?://[^/]' THEN
            RAISE EXCEPTION 'http sink "%" needs option "url" (http:// or https://)', name
                USING ERRCODE = '22023';
        END IF;
        IF options->>'url' ~ '[[:cntrl:][:space:]]' THEN
            RAISE EXCEPTION 'option "url" of sink "%" must not contain spaces or control characters', name
                USING ERRCODE = '22023', HINT = 'Percent-encode them (%20 for a space).';
        END IF;
        IF options ? 'headers' AND (jsonb_typeof(options->'headers') <> 'object' OR
            EXISTS (SELECT FROM jsonb_each(options->'headers') h
                    WHERE jsonb_typeof(h.value) <> 'string' OR h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$'
                       OR h.value->>0 ~ '[\r\n]')) THEN
            RAISE EXCEPTION 'option "headers" of sink "%" must map header names to strings', name
                USING ERRCODE = '22023';
        END IF;
    ELSIF kind = 'postgres' THEN
        known := known || ARRAY['server', 'table'];
        IF options->>'server' IS NULL OR options->>'table' IS NULL THEN
            RAISE EXCEPTION 'postgres sink "%" needs options "server" and "table"', name
                USING ERRCODE = '22023';
        END IF;
        -- a participant the caller, the sink's owner, may use, as for
        -- dtx.exec: 42704 unknown server or no user mapping, 42809 a server
        -- of another wrapper, 42501 no USAGE (checked again at delivery)
        PERFORM dtx._outbox_check_server(options->>'server');
        IF cardinality(parse_ident(options->>'table')) > 2 THEN
            RAISE EXCEPTION 'option "table" of sink "%" must be a table name, schema-qualified or not', name
                USING ERRCODE = '22023', DETAIL = format('"%s" has more than two parts.', options->>'table');
        END IF;
    ELSIF kind = 'notify' THEN
        known := known || ARRAY['channel'];
        IF coalesce(options->>'channel', '') = '' OR octet_length(options->>'channel') > 63 THEN
            RAISE EXCEPTION 'notify sink "%" needs option "channel" (1 to 63 bytes)', name
                USING ERRCODE = '22023';
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown sink kind "%"', kind
            USING ERRCODE = '22023', HINT = 'Kinds are postgres, http and notify.';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(options) LOOP
        IF NOT k = ANY (known) THEN
            RAISE EXCEPTION 'unknown option "%" for a % sink', k, kind
                USING ERRCODE = '22023', HINT = 'Valid options: ' || array_to_string(known, ', ');
        END IF;
        IF k IN ('batch_size', 'max_attempts', 'backoff_base_ms', 'backoff_max_ms',
                 'breaker_threshold', 'breaker_cooldown_ms', 'timeout_ms', 'concurrency')
           AND (jsonb_typeof(v) <> 'number' OR v::numeric <> trunc(v::numeric)
                OR v::numeric < 1 OR v::numeric > 2147483647) THEN
            RAISE EXCEPTION 'option "%" of sink "%" must be a positive integer', k, name
                USING ERRCODE = '22023';
        END IF;
        IF k IN ('url', 'server', 'table', 'channel') AND jsonb_typeof(v) <> 'string' THEN
            RAISE EXCEPTION 'option "%" of sink "%" must be a string', k, name
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
    IF (options->>'batch_size')::int > 10000 OR (options->>'concurrency')::int > 1000 THEN
        RAISE EXCEPTION 'batch_size is at most 10000 and concurrency at most 1000'
            USING ERRCODE = '22023';
    END IF;
    BEGIN
        INSERT INTO dtx.outbox_sink (name, kind, options)
        VALUES (sink_create.name, sink_create.kind, sink_create.options)
        RETURNING sink_id INTO id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'sink "%" already exists', name USING ERRCODE = '42710';
    END;
    RETURN id;
END
$$;
REVOKE ALL ON FUNCTION dtx.sink_create(text, text, jsonb) FROM PUBLIC;

COMMENT ON FUNCTION dtx.sink_create(text, text, jsonb) IS
  'create a sink: kind postgres (server, table), http (url, headers, timeout_ms) or notify (channel)';

CREATE FUNCTION dtx.sink_drop(name text, force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s dtx.outbox_sink;
    n bigint;
BEGIN
    IF name IS NULL OR force IS NULL THEN
        RAISE EXCEPTION 'sink name and force must not be null' USING ERRCODE = '22004';
    END IF;
    -- lock order as the dispatcher's: the sink's messages, then the sink
    PERFORM FROM dtx.outbox o JOIN dtx.outbox_sink x USING (sink_id)
     WHERE x.name = sink_drop.name FOR UPDATE OF o;
    SELECT * INTO s FROM dtx.outbox_sink WHERE outbox_sink.name = sink_drop.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    SELECT count(*) INTO n FROM dtx.outbox WHERE sink_id = s.sink_id;
    IF n > 0 AND NOT force THEN
        RAISE EXCEPTION 'sink "%" has % undelivered messages', name, n
            USING ERRCODE = '55006',
                  HINT = 'Wait for them, or use dtx.sink_drop(name, force => true) to move them to dtx.outbox_dead.';
    END IF;
    INSERT INTO dtx.outbox_dead (message_id, sink, topic, key, payload, headers,
                                 created_at, attempts, reason, last_error)
    SELECT o.message_id, s.name, o.topic, o.key, o.payload, o.headers, o.created_at,
           o.attempts, 'sink dropped', o.last_error
    FROM dtx.outbox o WHERE o.sink_id = s.sink_id
    ON CONFLICT DO NOTHING;
    DELETE FROM dtx.outbox WHERE sink_id = s.sink_id;
    DELETE FROM dtx.outbox_sink WHERE sink_id = s.sink_id;
END
$$;
REVOKE ALL ON FUNCTION dtx.sink_drop(text, boolean) FROM PUBLIC;

CREATE FUNCTION dtx.route_create(topic_pattern text, sink text)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid int;
    n bigint;
BEGIN
    IF topic_pattern IS NULL OR topic_pattern = '' OR sink IS NULL THEN
        RAISE EXCEPTION 'topic pattern and sink must not be null or empty' USING ERRCODE = '22004';
    END IF;
    SELECT sink_id INTO sid FROM dtx.outbox_sink s WHERE s.name = route_create.sink;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', sink USING ERRCODE = '42704';
    END IF;
    INSERT INTO dtx.outbox_route (topic_pattern, sink_id) VALUES (route_create.topic_pattern, sid)
    ON CONFLICT DO NOTHING;
    -- messages sent while no route matched their topic go to this sink now
    WITH moved AS (
        DELETE FROM dtx.outbox o
        USING dtx.outbox_route r
        WHERE o.sink_id = 0 AND r.sink_id = sid AND r.topic_pattern = route_create.topic_pattern
          AND o.topic LIKE r.like_pattern
        RETURNING o.*)
    INSERT INTO dtx.outbox (message_id, sink_id, topic, key, payload, headers, created_at)
    SELECT message_id, sid, topic, key, payload, headers, created_at FROM moved;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM dtx.outbox_wake();
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION dtx.route_create(text, text) FROM PUBLIC;

COMMENT ON FUNCTION dtx.route_create(text, text) IS
  'route topics matching a pattern (* = any characters) to a sink; returns how many unrouted messages it took over';

CREATE FUNCTION dtx.route_drop(topic_pattern text, sink text)
RETURNS boolean
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (
        DELETE FROM dtx.outbox_route r USING dtx.outbox_sink s
        WHERE r.sink_id = s.sink_id AND s.name = route_drop.sink
          AND r.topic_pattern = route_drop.topic_pattern
        RETURNING 1)
    SELECT count(*) > 0 FROM d
$$;
REVOKE ALL ON FUNCTION dtx.route_drop(text, text) FROM PUBLIC;

CREATE FUNCTION dtx.outbox_wake()
RETURNS void
AS 'MODULE_PATHNAME', 'dtx_outbox_wake'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dtx.outbox_wake() IS
  'wake the dispatcher when the current transaction commits (for rows queued by other means)';

CREATE VIEW dtx.outbox_status AS
SELECT s.name AS sink, s.kind,
       count(o.message_id) FILTER (WHERE o.next_attempt_at <= now()
                                   AND NOT coalesce(o.message_id = ANY (a.ids), false)) AS ready,
       count(o.message_id) FILTER (WHERE o.message_id = ANY (a.ids)) AS in_flight,
       count(o.message_id) FILTER (WHERE o.next_attempt_at > now()
                                   AND NOT coalesce(o.message_id = ANY (a.ids), false)) AS deferred,
       s.delivered,
       (SELECT count(*) FROM dtx.outbox_dead d WHERE d.sink = s.name) AS dead,
       now() - min(o.created_at) FILTER (WHERE o.next_attempt_at <= now()) AS oldest_ready_age,
       CASE WHEN s.breaker = 'open' AND s.breaker_until <= now() THEN 'half-open'
            ELSE s.breaker END AS breaker,
       s.failures AS consecutive_failures,
       s.last_error, s.last_error_at
FROM dtx.outbox_sink s
LEFT JOIN LATERAL (SELECT array_agg(x) AS ids FROM dtx.outbox_attempt t, unnest(t.message_ids) x
                   WHERE t.sink_id = s.sink_id) a ON true
LEFT JOIN dtx.outbox o ON o.sink_id = s.sink_id
GROUP BY s.sink_id, a.ids
UNION ALL
SELECT '(unrouted)', NULL, count(*), 0, 0, 0, 0, now() - min(o.created_at), NULL, NULL, NULL, NULL
FROM dtx.outbox o WHERE o.sink_id = 0 HAVING count(*) > 0;

COMMENT ON VIEW dtx.outbox_status IS
  'per sink: messages ready, in flight, deferred (backing off), delivered, dead; oldest ready age; circuit breaker';

-- Dead letters back to the queue (one message id or all, one sink or all),
-- from their first attempt; the worker is woken at commit.  Used by
-- outbox_replay and outbox_replay_all.
CREATE FUNCTION dtx.outbox_requeue(message_id bigint, sink text)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    WITH moved AS (
        DELETE FROM dtx.outbox_dead d USING dtx.outbox_sink s
        WHERE d.sink = s.name
          AND (outbox_requeue.message_id IS NULL OR d.message_id = outbox_requeue.message_id)
          AND (outbox_requeue.sink IS NULL OR d.sink = outbox_requeue.sink)
        RETURNING d.*, s.sink_id)
    INSERT INTO dtx.outbox (message_id, sink_id, topic, key, payload, headers, created_at)
    SELECT m.message_id, m.sink_id, m.topic, m.key, m.payload, m.headers, m.created_at
    FROM moved m
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM dtx.outbox_wake();
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION dtx.outbox_requeue(bigint, text) FROM PUBLIC;

CREATE FUNCTION dtx.outbox_replay(message_id bigint, sink text DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n int;
BEGIN
    IF message_id IS NULL THEN
        RAISE EXCEPTION 'message id must not be null' USING ERRCODE = '22004';
    END IF;
    n := dtx.outbox_requeue(outbox_replay.message_id, outbox_replay.sink);
    IF n = 0 AND NOT EXISTS (SELECT FROM dtx.outbox_dead d WHERE d.message_id = outbox_replay.message_id) THEN
        RAISE EXCEPTION 'no dead letter with message id %', message_id USING ERRCODE = '42704';
    END IF;
    PERFORM dtx.outbox_wake();
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION dtx.outbox_replay(bigint, text) FROM PUBLIC;

COMMENT ON FUNCTION dtx.outbox_replay(bigint, text) IS
  'move a dead letter back to the queue (all its sinks, or one); delivered again from its first attempt';

CREATE FUNCTION dtx.outbox_replay_all(sink text)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid int;
    n bigint;
BEGIN
    IF sink IS NULL THEN
        RAISE EXCEPTION 'sink name must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT s.sink_id INTO sid FROM dtx.outbox_sink s WHERE s.name = outbox_replay_all.sink;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', sink USING ERRCODE = '42704';
    END IF;
    RETURN dtx.outbox_requeue(NULL, outbox_replay_all.sink);
END
$$;
REVOKE ALL ON FUNCTION dtx.outbox_replay_all(text) FROM PUBLIC;

CREATE FUNCTION dtx.outbox_blocked_keys(
    OUT sink text, OUT key text, OUT head_message_id bigint, OUT attempts int,
    OUT next_attempt_at timestamptz, OUT last_error text, OUT waiting bigint)
RETURNS SETOF record
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.name, h.key, h.message_id, h.attempts, h.next_attempt_at, h.last_error,
           (SELECT count(*) FROM dtx.outbox w
            WHERE w.sink_id = h.sink_id AND w.key = h.key AND w.message_id > h.message_id)
    FROM dtx.outbox h JOIN dtx.outbox_sink s ON s.sink_id = h.sink_id
    WHERE h.key IS NOT NULL AND (h.attempts > 0 OR h.crashes > 0)
      AND NOT EXISTS (SELECT FROM dtx.outbox p WHERE p.sink_id = h.sink_id AND p.key = h.key
                      AND p.message_id < h.message_id)
    ORDER BY s.name, h.key
$$;

COMMENT ON FUNCTION dtx.outbox_blocked_keys() IS
  'keys whose oldest message failed at least once: later messages of the key wait behind it';

CREATE FUNCTION dtx.outbox_skip(sink text, key text)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sid int;
    head bigint;
BEGIN
    IF sink IS NULL OR key IS NULL THEN
        RAISE EXCEPTION 'sink and key must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT s.sink_id INTO sid FROM dtx.outbox_sink s WHERE s.name = outbox_skip.sink;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', sink USING ERRCODE = '42704';
    END IF;
    SELECT o.message_id INTO head FROM dtx.outbox o
    WHERE o.sink_id = sid AND o.key = outbox_skip.key
    ORDER BY o.message_id LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    WITH moved AS (
        DELETE FROM dtx.outbox o WHERE o.sink_id = sid AND o.message_id = head RETURNING o.*)
    INSERT INTO dtx.outbox_dead (message_id, sink, topic, key, payload, headers, created_at,
                                 attempts, reason, last_error)
    SELECT m.message_id, outbox_skip.sink, m.topic, m.key, m.payload, m.headers, m.created_at,
           m.attempts, 'skipped', m.last_error FROM moved m
    ON CONFLICT DO NOTHING;
    PERFORM dtx.outbox_wake();
    RETURN head;
END
$$;
REVOKE ALL ON FUNCTION dtx.outbox_skip(text, text) FROM PUBLIC;

COMMENT ON FUNCTION dtx.outbox_skip(text, text) IS
  'move the oldest message of a key to dtx.outbox_dead so that the key flows again; returns its id';

-- Consumer side: exactly-once effect
CREATE TABLE dtx.inbox (
    source      text COLLATE "C" NOT NULL,
    message_id  text COLLATE "C" NOT NULL,
    accepted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, message_id)
);
CREATE INDEX inbox_accepted_at_idx ON dtx.inbox (accepted_at);
REVOKE ALL ON dtx.inbox FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('dtx.inbox', '');

-- Who may accept from a source: its owner, the role that first accepted a
-- message from it (and roles with its privileges).  A superuser may assign
-- a source ahead of its first use, or hand it over, here.
CREATE TABLE dtx.inbox_source (
    source      text COLLATE "C" PRIMARY KEY,
    owner       regrole NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON dtx.inbox_source FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('dtx.inbox_source', '');

-- In C (src/outbox.c): it checks the caller against the source's owner,
-- then writes with the rights of its own owner, as SECURITY DEFINER would.
CREATE FUNCTION dtx.inbox_accept(message_id text, source text DEFAULT '')
RETURNS boolean
AS 'MODULE_PATHNAME', 'dtx_inbox_accept'
LANGUAGE C VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION dtx.inbox_accept(text, text) FROM PUBLIC;

COMMENT ON FUNCTION dtx.inbox_accept(text, text) IS
  'true the first time a message id is seen from a source, in the caller''s transaction (kept dtx.inbox_retention); a source belongs to the role that first used it';


-- ---------------------------------------------------------------------------
-- Isolation lab (src/lab.c): schedules run by real concurrent sessions
-- ---------------------------------------------------------------------------

-- One row of a lab report.
CREATE TYPE dtx.lab_step AS (
    step        int,        -- position in the schedule; null for final/verdict rows
    session     text,
    statement   text,
    outcome     text,       -- ok, blocked, error, timeout, cancelled, skipped, not run, final, kept, violated
    result      text,       -- rows, command tag, or whom a blocked step waits for
    sqlstate    text,
    message     text,
    after_step  int         -- the step after which it completed (blocked or queued steps)
);

CREATE FUNCTION dtx._lab_isolation(level text) RETURNS text
AS 'MODULE_PATHNAME', 'dtx_lab_isolation_sql' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

-- The engine; dtx.lab_run is its documented face.
CREATE FUNCTION dtx._lab_exec(isolation text, setup text[], sessions text[],
                              step_session int[], step_sql text[], teardown text[],
                              invariant text, timeout_ms int,
                              cond_step int[] DEFAULT NULL, cond_min int[] DEFAULT NULL)
RETURNS SETOF dtx.lab_step
AS 'MODULE_PATHNAME', 'dtx_lab_exec' LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;

-- A schedule's setup or teardown: null, one SQL string, or an array of them.
CREATE FUNCTION dtx._lab_sql_list(j jsonb, what text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out text[] := '{}';
    e jsonb;
BEGIN
    IF j IS NULL OR jsonb_typeof(j) = 'null' THEN
        RETURN out;
    ELSIF jsonb_typeof(j) = 'string' THEN
        RETURN ARRAY[j #>> '{}'];
    ELSIF jsonb_typeof(j) = 'array' THEN
        FOR e IN SELECT jsonb_array_elements(j) LOOP
            IF jsonb_typeof(e) <> 'string' THEN
                RAISE EXCEPTION '% must be an SQL string or an array of SQL strings', what
                    USING ERRCODE = '22023';
            END IF;
            out := out || (e #>> '{}');
        END LOOP;
        RETURN out;
    END IF;
    RAISE EXCEPTION '% must be an SQL string or an array of SQL strings', what
        USING ERRCODE = '22023';
END
$$;

CREATE FUNCTION dtx.lab_run(schedule jsonb, isolation text DEFAULT 'read committed')
RETURNS SETOF dtx.lab_step
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    names text[] := '{}';
    step_session int[] := '{}';
    step_sql text[] := '{}';
    e jsonb;
    sname text;
    ssql text;
    i int := 0;
    pos int;
    explicit boolean := false;
    timeout int;
BEGIN
    IF schedule IS NULL OR isolation IS NULL THEN
        RAISE EXCEPTION 'schedule and isolation must not be null' USING ERRCODE = '22004';
    END IF;
    PERFORM dtx._lab_isolation(isolation);
    IF jsonb_typeof(schedule) <> 'object' THEN
        RAISE EXCEPTION 'a schedule must be a JSON object'
            USING ERRCODE = '22023',
                  HINT = 'For example {"setup": "create table t (id int)", "steps": [["T1", "begin"], ["T2", "begin"], ...]}.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(schedule) LOOP
        IF k NOT IN ('setup', 'sessions', 'steps', 'teardown', 'invariant', 'timeout_ms') THEN
            RAISE EXCEPTION 'unknown schedule key "%"', k
                USING ERRCODE = '22023',
                      HINT = 'The keys are setup, sessions, steps, teardown, invariant and timeout_ms.';
        END IF;
    END LOOP;
    IF schedule ? 'sessions' THEN
        IF jsonb_typeof(schedule->'sessions') <> 'array' THEN
            RAISE EXCEPTION 'sessions must be an array of names' USING ERRCODE = '22023';
        END IF;
        FOR e IN SELECT jsonb_array_elements(schedule->'sessions') LOOP
            IF jsonb_typeof(e) <> 'string' OR e #>> '{}' = '' THEN
                RAISE EXCEPTION 'session names must be non-empty strings' USING ERRCODE = '22023';
            END IF;
            names := names || (e #>> '{}');
        END LOOP;
        explicit := true;
    END IF;
    IF jsonb_typeof(schedule->'steps') IS DISTINCT FROM 'array'
       OR jsonb_array_length(schedule->'steps') = 0 THEN
        RAISE EXCEPTION 'a schedule needs "steps", a non-empty array'
            USING ERRCODE = '22023',
                  HINT = 'Each step is ["session", "sql"] or {"session": "...", "sql": "..."}.';
    END IF;
    FOR e IN SELECT jsonb_array_elements(schedule->'steps') LOOP
        i := i + 1;
        IF jsonb_typeof(e) = 'array' AND jsonb_array_length(e) = 2
           AND jsonb_typeof(e->0) = 'string' AND jsonb_typeof(e->1) = 'string' THEN
            sname := e->>0;
            ssql := e->>1;
        ELSIF jsonb_typeof(e) = 'object' AND jsonb_typeof(e->'session') = 'string'
              AND jsonb_typeof(e->'sql') = 'string'
              AND (SELECT count(*) FROM jsonb_object_keys(e)) = 2 THEN
            sname := e->>'session';
            ssql := e->>'sql';
        ELSE
            RAISE EXCEPTION 'step % must be ["session", "sql"] or {"session": "...", "sql": "..."}', i
                USING ERRCODE = '22023';
        END IF;
        IF sname = '' THEN
            RAISE EXCEPTION 'step % has an empty session name', i USING ERRCODE = '22023';
        END IF;
        pos := array_position(names, sname);
        IF pos IS NULL THEN
            IF explicit THEN
                RAISE EXCEPTION 'step % names unknown session "%"', i, sname
                    USING ERRCODE = '22023',
                          HINT = format('The schedule''s sessions are %s.', array_to_string(names, ', '));
            END IF;
            names := names || sname;
            pos := cardinality(names);
        END IF;
        step_session := step_session || pos;
        step_sql := step_sql || ssql;
    END LOOP;
    IF schedule ? 'invariant' AND jsonb_typeof(schedule->'invariant') <> 'string' THEN
        RAISE EXCEPTION 'invariant must be an SQL boolean expression, as a string' USING ERRCODE = '22023';
    END IF;
    IF schedule ? 'timeout_ms' THEN
        IF jsonb_typeof(schedule->'timeout_ms') <> 'number'
           OR (schedule->>'timeout_ms')::numeric <> trunc((schedule->>'timeout_ms')::numeric)
           OR (schedule->>'timeout_ms')::numeric NOT BETWEEN 10 AND 3600000 THEN
            RAISE EXCEPTION 'timeout_ms must be an integer from 10 to 3600000' USING ERRCODE = '22023';
        END IF;
        timeout := (schedule->>'timeout_ms')::int;
    END IF;
    RETURN QUERY
        SELECT * FROM dtx._lab_exec(isolation,
                                    dtx._lab_sql_list(schedule->'setup', 'setup'),
                                    names, step_session, step_sql,
                                    dtx._lab_sql_list(schedule->'teardown', 'teardown'),
                                    schedule->>'invariant', timeout);
END
$$;

COMMENT ON FUNCTION dtx.lab_run(jsonb, text) IS
  'run a schedule of steps over named concurrent sessions; report every step (ok, blocked, error with SQLSTATE), the final state and the invariant';

CREATE FUNCTION dtx.lab_write_skew(isolation text DEFAULT 'repeatable read', fix text DEFAULT NULL)
RETURNS SETOF dtx.lab_step
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lvl text;
    chk text := 'select name from doctors where on_call and shift = 1234';
    r dtx.lab_step;
    rows dtx.lab_step[] := '{}';
    verdict text;
    why text;
BEGIN
    IF isolation IS NULL THEN
        RAISE EXCEPTION 'isolation must not be null' USING ERRCODE = '22004';
    END IF;
    lvl := dtx._lab_isolation(isolation);
    IF fix IS NULL OR lower(fix) = 'none' THEN
        NULL;
    ELSIF lower(fix) = 'serializable' THEN
        lvl := 'serializable';
    ELSIF lower(fix) = 'for update' THEN
        chk := chk || ' for update';
    ELSE
        RAISE EXCEPTION 'unknown fix "%"', fix
            USING ERRCODE = '22023', HINT = 'Use serializable or for update (or none).';
    END IF;
    FOR r IN
        SELECT * FROM dtx._lab_exec(
            lvl,
            ARRAY['create table doctors (name text primary key, shift int not null, on_call boolean not null)',
                  'insert into doctors values (''alice'', 1234, true), (''bob'', 1234, true)'],
            ARRAY['alice', 'bob'],
            ARRAY[1, 2, 1, 2, 1, 2, 1, 2],
            ARRAY['begin isolation level ' || lvl, 'begin isolation level ' || lvl,
                  chk, chk,
                  'update doctors set on_call = false where name = ''alice''',
                  'update doctors set on_call = false where name = ''bob''',
                  'commit', 'commit'],
            NULL,
            '(select count(*) from doctors where on_call and shift = 1234) >= 1',
            NULL,
            ARRAY[0, 0, 0, 0, 3, 4, 0, 0],
            ARRAY[0, 0, 0, 0, 2, 2, 0, 0])
    LOOP
        IF r.outcome = 'skipped' AND r.result LIKE '%failed' THEN
            r.result := format('not sent: %s''s check failed', r.session);
        ELSIF r.outcome = 'skipped' THEN
            r.result := format('not sent: %s saw fewer than two doctors on call, so stays on call', r.session);
        END IF;
        IF r.step IS NULL AND r.outcome IN ('kept', 'violated', 'unknown') THEN
            verdict := r.outcome;
            CONTINUE;
        END IF;
        rows := rows || r;
        RETURN NEXT r;
    END LOOP;

    SELECT string_agg(format('%s''s %s (step %s) failed with %s: %s', u.session,
                             split_part(u.statement, ' ', 1), u.step, u.sqlstate, u.message),
                      '; ' ORDER BY u.step)
      INTO why FROM unnest(rows) u WHERE u.outcome = 'error';
    r := NULL;
    r.statement := 'invariant: at least one doctor on call';
    r.outcome := verdict;
    r.result := CASE verdict WHEN 'kept' THEN 'kept' ELSE 'violated: nobody is on call' END;
    r.message := coalesce(why,
        CASE WHEN EXISTS (SELECT 1 FROM unnest(rows) u WHERE u.outcome = 'skipped')
             THEN 'both committed; the second doctor saw only one on call and stayed'
             ELSE 'both committed: each saw two doctors on call and went off call' END);
    IF why IS NOT NULL THEN
        r.message := 'aborted: ' || r.message;
    END IF;
    RETURN NEXT r;
END
$$;

COMMENT ON FUNCTION dtx.lab_write_skew(text, text) IS
  'stage the on-call doctors write skew with two real sessions; fix => ''serializable'' or ''for update'' shows the two standard fixes';

-- The 15 Hermitage tests (github.com/ept/hermitage, Martin Kleppmann, CC BY
-- 4.0), as schedules.  Each invariant says "the anomaly did not happen",
-- judged from what the steps returned; witness lists the steps whose
-- outcome decides it (an abort elsewhere is a different conflict).
CREATE FUNCTION dtx.lab_hermitage()
RETURNS TABLE (test text, anomaly text, description text, schedule jsonb, witness int[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $lab$
SELECT t.test, t.anomaly, t.description,
       jsonb_build_object(
           'setup', jsonb_build_array('create table test (id int primary key, value int)',
                                      'insert into test (id, value) values (1, 10), (2, 20)'),
           'steps', t.steps::jsonb,
           'invariant', t.invariant),
       t.witness
  FROM (VALUES
  (1, 'g0', 'G0', 'write cycles (dirty writes)',
   $$[["T1","begin"],["T2","begin"],
      ["T1","update test set value = 11 where id = 1"],
      ["T2","update test set value = 12 where id = 1"],
      ["T1","update test set value = 21 where id = 2"],
      ["T1","commit"],
      ["T1","select * from test"],
      ["T2","update test set value = 22 where id = 2"],
      ["T2","commit"]]$$,
   $$(select array_agg(value order by id)::text from test) in ('{11,21}', '{12,22}')$$,
   '{4,8}'::int[]),
  (2, 'g1a', 'G1a', 'aborted reads',
   $$[["T1","begin"],["T2","begin"],
      ["T1","update test set value = 101 where id = 1"],
      ["T2","select * from test"],
      ["T1","abort"],
      ["T2","select * from test"],
      ["T2","commit"]]$$,
   $$not exists (select from steps where step in (4, 6) and result like '%(1,101)%')$$,
   '{4,6}'),
  (3, 'g1b', 'G1b', 'intermediate reads',
   $$[["T1","begin"],["T2","begin"],
      ["T1","update test set value = 101 where id = 1"],
      ["T2","select * from test"],
      ["T1","update test set value = 11 where id = 1"],
      ["T1","commit"],
      ["T2","select * from test"],
      ["T2","commit"]]$$,
   $$not exists (select from steps where step in (4, 7) and result like '%(1,101)%')$$,
   '{4,7}'),
  (4, 'g1c', 'G1c', 'circular information flow',
   $$[["T1","begin"],["T2","begin"],
      ["T1","update test set value = 11 where id = 1"],
      ["T2","update test set value = 22 where id = 2"],
      ["T1","select * from test where id = 2"],
      ["T2","select * from test where id = 1"],
      ["T1","commit"],
      ["T2","commit"]]$$,
   $$not (exists (select from steps where step = 5 and result = '(2,22)')
          and exists (select from steps where step = 6 and result = '(1,11)'))$$,
   '{5,6}'),
  (5, 'otv', 'OTV', 'observed transaction vanishes',
   $$[["T1","begin"],["T2","begin"],["T3","begin"],
      ["T1","update test set value = 11 where id = 1"],
      ["T1","update test set value = 19 where id = 2"],
      ["T2","update test set value = 12 where id = 1"],
      ["T1","commit"],
      ["T3","select * from test where id = 1"],
      ["T2","update test set value = 18 where id = 2"],
      ["T3","select * from test where id = 2"],
      ["T2","commit"],
      ["T3","select * from test where id = 2"],
      ["T3","select * from test where id = 1"],
      ["T3","commit"]]$$,
   $$not (exists (select from steps where step in (10, 12) and result = '(2,18)')
          and exists (select from steps where step = 13 and result = '(1,11)'))$$,
   '{6,9,10,12,13}'),
  (6, 'pmp', 'PMP', 'predicate-many-preceders (read predicate)',
   $$[["T1","begin"],["T2","begin"],
      ["T1","select * from test where value = 30"],
      ["T2","insert into test (id, value) values (3, 30)"],
      ["T2","commit"],
      ["T1","select * from test where value % 3 = 0"],
      ["T1","commit"]]$$,
   $$not exists (select from steps where step = 6 and result like '%(3,30)%')$$,
   '{3,6}'),
  (7, 'pmp-write', 'PMP', 'predicate-many-preceders (write predicate)',
   $$[["T1","begin"],["T2","begin"],
      ["T1","update test set value = value + 10"],
      ["T2","delete from test where value = 20"],
      ["T1","commit"],
      ["T2","select * from test where value = 20"],
      ["T2","commit"]]$$,
   $$not exists (select from steps where step = 6 and result like '%(1,20)%')$$,
   '{4,6}'),
  (8, 'p4', 'P4', 'lost update',
   $$[["T1","begin"],["T2","begin"],
      ["T1","select * from test where id = 1"],
      ["T2","select * from test where id = 1"],
      ["T1","update test set value = 11 where id = 1"],
      ["T2","update test set value = 11 where id = 1"],
      ["T1","commit"],
      ["T2","commit"]]$$,
   $$(select count(*) from steps where step in (7, 8) and result = 'COMMIT') < 2$$,
   '{6,8}'),
  (9, 'g-single', 'G-single', 'read skew',
   $$[["T1","begin"],["T2","begin"],
      ["T1","select * from test where id = 1"],
      ["T2","select * from test where id = 1"],
      ["T2","select * from test where id = 2"],
      ["T2","update test set value = 12 where id = 1"],
      ["T2","update test set value = 18 where id = 2"],
      ["T2","commit"],
      ["T1","select * from test where id = 2"],
      ["T1","commit"]]$$,
   $$not exists (select from steps where step = 9 and result = '(2,18)')$$,
   '{3,9}'),
  (10, 'g-single-dependencies', 'G-single', 'read skew (predicate dependencies)',
   $$[["T1","begin"],["T2","begin"],
      ["T1","select * from test where value % 5 = 0"],
      ["T2","update test set value = 12 where value = 10"],
      ["T2","commit"],
      ["T1","select * from test where value % 3 = 0"],
      ["T1","commit"]]$$,
   $$not exists (select from steps where step = 6 and result like '%(1,12)%')$$,
   '{3,6}'),
  (11, 'g-single-write-1', 'G-single', 'read skew (write predicate)',
   $$[["T1","begin"],["T2","begin"],
      ["T1","select * from test where id = 1"],
      ["T2","select * from test"],
      ["T2","update test set value = 12 where id = 1"],
      ["T2","update test set value = 18 where id = 2"],
      ["T2","commit"],
      ["T1","delete from test where value = 20"],
      ["T1","commit"]]$$,
   $$not exists (select from steps where step = 8 and result = 'DELETE 0')$$,
   '{8}'),
  (12, 'g-single-write-2', 'G-single', 'read skew (write predicate, interleaved)',
   $$[["T1","begin"],["T2","begin"],
      ["T1","select * from test where id = 1"],
      ["T2","select * from test"],
      ["T2","update test set value = 12 where id = 1"],
      ["T1","delete from test where value = 20"],
      ["T2","update test set value = 18 where id = 2"],
      ["T1","rollback"],
      ["T2","commit"]]$$,
   $$(select array_agg(value order by id)::text from test) = '{12,18}'$$,
   '{6,7}'),
  (13, 'g2-item', 'G2-item', 'write skew (item anti-dependency cycle)',
   $$[["T1","begin"],["T2","begin"],
      ["T1","select * from test where id in (1,2)"],
      ["T2","select * from test where id in (1,2)"],
      ["T1","update test set value = 11 where id = 1"],
      ["T2","update test set value = 21 where id = 2"],
      ["T1","commit"],
      ["T2","commit"]]$$,
   $$(select count(*) from steps where step in (7, 8) and result = 'COMMIT') < 2$$,
   '{5,6,7,8}'),
  (14, 'g2', 'G2', 'anti-dependency cycle (predicate read)',
   $$[["T1","begin"],["T2","begin"],
      ["T1","select * from test where value % 3 = 0"],
      ["T2","select * from test where value % 3 = 0"],
      ["T1","insert into test (id, value) values (3, 30)"],
      ["T2","insert into test (id, value) values (4, 42)"],
      ["T1","commit"],
      ["T2","commit"]]$$,
   $$(select count(*) from steps where step in (7, 8) and result = 'COMMIT') < 2$$,
   '{5,6,7,8}'),
  (15, 'g2-two-edges', 'G2', 'anti-dependency cycle with two edges (Fekete et al.)',
   $$[["T1","begin"],
      ["T1","select * from test"],
      ["T2","begin"],
      ["T2","update test set value = value + 5 where id = 2"],
      ["T2","commit"],
      ["T3","begin"],
      ["T3","select * from test"],
      ["T3","commit"],
      ["T1","update test set value = 0 where id = 1"],
      ["T1","commit"]]$$,
   $$(select count(*) from steps where step in (5, 8, 10) and result = 'COMMIT') < 3$$,
   '{9,10}')
  ) AS t(n, test, anomaly, description, steps, invariant, witness)
 ORDER BY t.n
$lab$;

COMMENT ON FUNCTION dtx.lab_hermitage() IS
  'the 15 Hermitage anomaly tests as lab schedules (github.com/ept/hermitage, CC BY 4.0)';

CREATE FUNCTION dtx.lab_anomalies(isolation text DEFAULT NULL)
RETURNS TABLE (test text, anomaly text, level text, result text, how text,
               evidence text, other_aborts text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    levels text[];
    lvl text;
    h record;
    res dtx.lab_step[];
    inv text;
    ab dtx.lab_step;
    bl dtx.lab_step;
BEGIN
    IF lab_anomalies.isolation IS NULL THEN
        levels := ARRAY['read committed', 'repeatable read', 'serializable'];
    ELSE
        levels := ARRAY[dtx._lab_isolation(lab_anomalies.isolation)];
    END IF;
    FOR h IN SELECT * FROM dtx.lab_hermitage() LOOP
        FOREACH lvl IN ARRAY levels LOOP
            SELECT array_agg(r) INTO res FROM dtx.lab_run(h.schedule, lvl) r;
            SELECT u.outcome INTO inv FROM unnest(res) u
             WHERE u.step IS NULL AND u.outcome IN ('kept', 'violated', 'unknown');
            SELECT * INTO ab FROM unnest(res) u
             WHERE u.step = ANY (h.witness) AND u.sqlstate IN ('40001', '40P01')
             ORDER BY u.step LIMIT 1;
            SELECT * INTO bl FROM unnest(res) u
             WHERE u.step = ANY (h.witness) AND u.outcome = 'blocked'
             ORDER BY u.step LIMIT 1;
            test := h.test;
            anomaly := h.anomaly;
            level := lvl;
            result := CASE inv WHEN 'kept' THEN 'prevented' WHEN 'violated' THEN 'possible' ELSE 'unknown' END;
            how := CASE WHEN inv IS DISTINCT FROM 'kept' THEN NULL
                        WHEN ab.step IS NOT NULL THEN 'abort (' || ab.sqlstate || ')'
                        WHEN bl.step IS NOT NULL THEN 'blocking'
                        ELSE 'snapshot' END;
            SELECT string_agg(format('%s %s: %s', u.session, u.step,
                                     CASE WHEN u.outcome = 'ok' THEN u.result
                                          WHEN u.outcome = 'blocked' THEN 'blocked, ' || u.result
                                          ELSE u.outcome || ' ' || coalesce(u.sqlstate, '') || ' ' || coalesce(u.message, '') END)
                              || CASE WHEN u.after_step IS NOT NULL AND u.outcome <> 'blocked'
                                      THEN format(' (after step %s)', u.after_step) ELSE '' END,
                              '; ' ORDER BY u.step, u.outcome = 'blocked' DESC)
              INTO evidence FROM unnest(res) u WHERE u.step = ANY (h.witness);
            SELECT string_agg(format('%s %s (%s): %s %s', u.session, u.step, u.statement,
                                     u.sqlstate, u.message), '; ' ORDER BY u.step)
              INTO other_aborts FROM unnest(res) u
             WHERE u.step IS NOT NULL AND NOT u.step = ANY (h.witness)
               AND u.sqlstate IN ('40001', '40P01');
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

COMMENT ON FUNCTION dtx.lab_anomalies(text) IS
  'run the 15 Hermitage anomaly tests live at each isolation level: prevented or possible, and how (snapshot, blocking, abort)';

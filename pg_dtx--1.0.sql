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
  'extend a lease held with token to now + ttl; SQLSTATE DX011 if it is lost or expired';

CREATE FUNCTION dtx.lease_release(name text, token bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'dtx_lease_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION dtx.lease_release(text, bigint) IS
  'release a lease held with token, handing it to the next waiter; false if it was not held with that token (or had expired)';

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
    OUT waiters integer, OUT pid integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'dtx_leases'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW dtx.leases AS
SELECT name, holder, token, acquired_at, expires_at, waiters, state, pid
  FROM dtx.leases_list();

COMMENT ON VIEW dtx.leases IS
  'leases of this database that are held, being handed over, or waited for';

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

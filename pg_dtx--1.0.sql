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

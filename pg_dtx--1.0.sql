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

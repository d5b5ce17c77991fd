--
-- Bad input: each is an error with an SQLSTATE, the server stays up and
-- nothing is left behind.
--

-- unknown server
SELECT expect_error($$SELECT dtx.exec('no_such_server', 'SELECT 1')$$);
SELECT expect_error($$SELECT * FROM dtx.query('no_such_server', 'SELECT 1') AS r(x int)$$);
-- a server of another wrapper
CREATE FOREIGN DATA WRAPPER other_fdw;
CREATE SERVER other_srv FOREIGN DATA WRAPPER other_fdw;
SELECT expect_error($$SELECT dtx.exec('other_srv', 'SELECT 1')$$);
SELECT server, reachable, error FROM dtx.probe('other_srv');
DROP SERVER other_srv;
DROP FOREIGN DATA WRAPPER other_fdw;
-- a server without a user mapping
DO $$
BEGIN
  EXECUTE format('CREATE SERVER loop_nomap FOREIGN DATA WRAPPER pg_dtx OPTIONS (host %L, port %L, dbname %L)',
                 split_part(current_setting('unix_socket_directories'), ',', 1),
                 current_setting('port'), 'dtx_regress_a');
END $$;
SELECT replace(expect_error($$SELECT dtx.exec('loop_nomap', 'SELECT 1')$$), current_user, '<user>');
DROP SERVER loop_nomap;
-- NULL arguments
SELECT expect_error($$SELECT dtx.exec(NULL, 'SELECT 1')$$);
SELECT expect_error($$SELECT dtx.exec('loop_a', NULL)$$);
SELECT expect_error($$SELECT * FROM dtx.query(NULL, 'SELECT 1') AS r(x int)$$);
SELECT expect_error($$SELECT * FROM dtx.query('loop_a', NULL) AS r(x int)$$);
-- remote syntax error: the remote SQLSTATE, message and SQL come back
SELECT expect_error($$SELECT dtx.exec('loop_a', 'SELEC 1')$$);
\set SHOW_CONTEXT always
SELECT dtx.exec('loop_a', 'SELECT no_such_column FROM accounts');
-- remote constraint violation: the remote SQLSTATE is kept, with detail
SELECT expect_error($$SELECT dtx.exec('loop_a', 'INSERT INTO accounts VALUES (1, 0)')$$);
SELECT dtx.exec('loop_a', 'INSERT INTO accounts VALUES (1, 0)');
\set SHOW_CONTEXT errors
-- remote hint and detail come back too
SELECT expect_error($$SELECT dtx.exec('loop_a', 'DO $x$ BEGIN RAISE EXCEPTION ''boom'' USING ERRCODE = ''P0042'', DETAIL = ''the detail'', HINT = ''the hint''; END $x$')$$);
DO $$ BEGIN PERFORM dtx.exec('loop_a', 'DO $x$ BEGIN RAISE EXCEPTION ''boom'' USING ERRCODE = ''P0042'', DETAIL = ''the detail'', HINT = ''the hint''; END $x$'); END $$;
-- a query whose shape does not match the column definition list
SELECT expect_error($$SELECT * FROM dtx.query('loop_a', 'SELECT 1, 2') AS r(x int)$$);
SELECT expect_error($$SELECT * FROM dtx.query('loop_a', 'SELECT ''abc''') AS r(x int)$$);
-- dtx.query outside FROM
SELECT expect_error($$SELECT dtx.query('loop_a', 'SELECT 1')$$);
-- an unreachable participant: an error, not a hang
CREATE SERVER nowhere FOREIGN DATA WRAPPER pg_dtx OPTIONS (host '127.0.0.1', port '1', dbname 'x');
CREATE USER MAPPING FOR PUBLIC SERVER nowhere;
SELECT regexp_replace(expect_error($$SELECT dtx.exec('nowhere', 'SELECT 1')$$), E'\n.*', '', 's');
SELECT server, reachable, max_prepared_transactions FROM dtx.probe('nowhere');
DROP SERVER nowhere CASCADE;
-- COPY through dtx.exec/dtx.query: refused at once (0A000), not left
-- spinning until statement_timeout; the connection is closed, and the
-- session and the participant stay usable
SET statement_timeout = '10s';
SELECT expect_error($$SELECT dtx.exec('loop_a', 'COPY accounts FROM STDIN')$$);
SELECT expect_error($$SELECT dtx.exec('loop_a', 'COPY (SELECT 1) TO STDOUT')$$);
SELECT expect_error($$SELECT * FROM dtx.query('loop_a', 'COPY accounts TO STDOUT') AS r(id int, balance numeric)$$);
RESET statement_timeout;
SELECT count(*) AS loop_a_connections FROM dtx.connections() WHERE server = 'loop_a';
SELECT * FROM dtx.query('loop_a', 'SELECT count(*) FROM accounts') AS r(n bigint);
-- client_encoding cannot be changed on a participant connection, and text
-- that is not valid in the database encoding never enters a table
SELECT expect_error($$SELECT dtx.exec('loop_a', 'SET client_encoding = ''LATIN1''')$$);
SELECT * FROM dtx.query('loop_a', 'SHOW client_encoding') AS r(enc text);
CREATE TABLE enc_t (a text);
SELECT expect_error($$INSERT INTO enc_t SELECT a FROM dtx.query('loop_a', 'SET client_encoding = ''LATIN1''; SELECT E''caf\u00e9''::text') AS r(a text)$$);
SELECT expect_error($$INSERT INTO enc_t SELECT b FROM dtx.query('loop_a', 'SELECT set_config(''client_encoding'', ''LATIN1'', false), E''caf\u00e9''::text') AS r(a text, b text)$$);
SELECT count(*) AS stored FROM enc_t;
DROP TABLE enc_t;
SELECT * FROM dtx.query('loop_a', 'SELECT E''caf\u00e9''::text, current_setting(''client_encoding'')') AS r(a text, enc text);
-- control characters in a participant's error text are shown escaped
SELECT expect_error($$SELECT dtx.exec('loop_a', 'DO $x$ BEGIN RAISE EXCEPTION ''bell%tab%cr%end'', chr(7), chr(9), chr(13); END $x$')$$);
DO $$
DECLARE h text;
BEGIN
  PERFORM dtx.exec('loop_a', 'DO $x$ BEGIN RAISE EXCEPTION ''x'' USING HINT = chr(27) || ''[2J''; END $x$');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
  RAISE NOTICE 'hint: %', h;
END $$;
-- settings are checked
SET dtx.connect_timeout = 0;
SET dtx.cancel_timeout = '1 hour';
SET dtx.remote_timeout = -1;
SHOW dtx.remote_timeout;
-- after all this the participants are idle and usable
SELECT server, connected, in_transaction FROM dtx.participants ORDER BY server;
SELECT total('loop_a') AS a, total('loop_b') AS b;
SELECT count(*) FROM pg_prepared_xacts;

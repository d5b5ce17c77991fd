--
-- Options of pg_dtx servers and user mappings: unknown and misplaced
-- options are refused; password only in a user mapping.
--
\set VERBOSITY terse
CREATE SERVER bad1 FOREIGN DATA WRAPPER pg_dtx OPTIONS (password 'secret');
CREATE SERVER bad2 FOREIGN DATA WRAPPER pg_dtx OPTIONS (user 'someone');
CREATE SERVER bad3 FOREIGN DATA WRAPPER pg_dtx OPTIONS (no_such_option 'x');
CREATE SERVER bad4 FOREIGN DATA WRAPPER pg_dtx OPTIONS (application_name 'x');
CREATE SERVER bad5 FOREIGN DATA WRAPPER pg_dtx OPTIONS (port 'eighty');
CREATE SERVER bad6 FOREIGN DATA WRAPPER pg_dtx OPTIONS (port '70000');
CREATE SERVER bad7 FOREIGN DATA WRAPPER pg_dtx OPTIONS (connect_timeout '-1');
CREATE SERVER bad8 FOREIGN DATA WRAPPER pg_dtx OPTIONS (client_encoding 'latin1');
CREATE USER MAPPING FOR PUBLIC SERVER loop_a OPTIONS (host 'x');
ALTER USER MAPPING FOR CURRENT_USER SERVER loop_a OPTIONS (ADD dbname 'x');
ALTER FOREIGN DATA WRAPPER pg_dtx OPTIONS (ADD host 'x');
SELECT count(*) FROM pg_foreign_server WHERE srvname LIKE 'bad%';
\set VERBOSITY default

-- the error lists the valid options in that place
SELECT expect_error($$CREATE USER MAPPING FOR PUBLIC SERVER loop_a OPTIONS (bogus 'x')$$);

-- valid options are accepted
CREATE SERVER ok1 FOREIGN DATA WRAPPER pg_dtx
  OPTIONS (host 'localhost', port '5432', dbname 'x', connect_timeout '3', sslmode 'disable', keepalives '1');
CREATE USER MAPPING FOR PUBLIC SERVER ok1 OPTIONS (user 'someone', password 'secret', password_required 'true');
-- no password, ever, in the participants view
SELECT * FROM dtx.participants WHERE server = 'ok1';
SELECT count(*) FROM dtx.participants p, pg_user_mappings m
 WHERE p.server = m.srvname AND row_to_json(p)::text LIKE '%secret%';
DROP SERVER ok1 CASCADE;

-- a non-superuser may not turn password_required off
CREATE ROLE regress_dtx_user LOGIN;
GRANT USAGE ON FOREIGN SERVER loop_a TO regress_dtx_user;
SET ROLE regress_dtx_user;
SELECT expect_error($$CREATE USER MAPPING FOR regress_dtx_user SERVER loop_a OPTIONS (user 'regress_dtx_user', password_required 'false')$$);
RESET ROLE;

-- a non-superuser must authenticate with a password: without one in the
-- user mapping the connection is not even tried ...
CREATE USER MAPPING FOR regress_dtx_user SERVER loop_a OPTIONS (user 'regress_dtx_user');
SET ROLE regress_dtx_user;
SELECT expect_error($$SELECT dtx.exec('loop_a', 'SELECT 1')$$);
RESET ROLE;
-- ... and with one, the server must ask for it (here it trusts the socket)
ALTER USER MAPPING FOR regress_dtx_user SERVER loop_a OPTIONS (ADD password 'pw-Never-Shown-42');
SET ROLE regress_dtx_user;
SELECT expect_error($$SELECT dtx.exec('loop_a', 'SELECT 1')$$);
-- no USAGE on the server
SELECT expect_error($$SELECT dtx.exec('loop_b', 'SELECT 1')$$);
-- dtx.probe needs USAGE too, and dtx.probe() lists only the servers the
-- role may use
SELECT expect_error($$SELECT * FROM dtx.probe('loop_b')$$);
SELECT server FROM dtx.probe() ORDER BY server;
RESET ROLE;
-- a superuser may allow it explicitly
ALTER USER MAPPING FOR regress_dtx_user SERVER loop_a OPTIONS (ADD password_required 'false');
SET ROLE regress_dtx_user;
SELECT dtx.exec('loop_a', 'SELECT 1');
SELECT * FROM dtx.query('loop_a', 'SELECT current_user') AS r(u name);
RESET ROLE;
SELECT dtx.disconnect();
DROP USER MAPPING FOR regress_dtx_user SERVER loop_a;
REVOKE USAGE ON FOREIGN SERVER loop_a FROM regress_dtx_user;
DROP ROLE regress_dtx_user;

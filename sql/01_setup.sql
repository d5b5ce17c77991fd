--
-- Set-up shared by the regression tests: the extension, two participant
-- databases on this same instance (reached over its unix socket), their
-- servers, and a helper that turns an error into a line of text.
--
CREATE EXTENSION pg_dtx;

-- pg_dtx lives in its own schema, and its wrapper was created with it
SELECT extname, extnamespace::regnamespace FROM pg_extension WHERE extname = 'pg_dtx';
SELECT fdwname, fdwvalidator::regproc FROM pg_foreign_data_wrapper WHERE fdwname = 'pg_dtx';

-- the dtx.* prefix is reserved: a misspelt setting is an error
SET dtx.no_such_setting = 1;
SHOW dtx.connect_timeout;
SHOW dtx.cancel_timeout;

CREATE DATABASE dtx_regress_a;
CREATE DATABASE dtx_regress_b;

DO $$
BEGIN
  EXECUTE format('CREATE SERVER loop_a FOREIGN DATA WRAPPER pg_dtx OPTIONS (host %L, port %L, dbname %L)',
                 split_part(current_setting('unix_socket_directories'), ',', 1),
                 current_setting('port'), 'dtx_regress_a');
  EXECUTE format('CREATE SERVER loop_b FOREIGN DATA WRAPPER pg_dtx OPTIONS (host %L, port %L, dbname %L)',
                 split_part(current_setting('unix_socket_directories'), ',', 1),
                 current_setting('port'), 'dtx_regress_b');
END $$;
CREATE USER MAPPING FOR CURRENT_USER SERVER loop_a;
CREATE USER MAPPING FOR CURRENT_USER SERVER loop_b;

-- expect_error(sql): runs sql and returns 'SQLSTATE: message' (or 'ok')
CREATE FUNCTION expect_error(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

SELECT dtx.exec('loop_a', 'CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL CHECK (balance >= 0))');
SELECT dtx.exec('loop_b', 'CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL CHECK (balance >= 0))');
SELECT dtx.exec('loop_a', 'INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 5) g');
SELECT dtx.exec('loop_b', 'INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 5) g');

SELECT server, wrapper, port = current_setting('port') AS port_ok, dbname, connected, in_transaction
  FROM dtx.participants ORDER BY server;

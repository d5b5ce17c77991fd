--
-- Remote work commits and rolls back with the local transaction, and
-- savepoints are mirrored on the participants.
--
CREATE TABLE local_log (note text);

-- helper: a participant's balance total, read in its own transaction
CREATE FUNCTION total(srv name) RETURNS numeric LANGUAGE sql AS $$
  SELECT t FROM dtx.query(srv, 'SELECT sum(balance) FROM accounts') AS r(t numeric)
$$;

-- commit: local and both remotes
BEGIN;
INSERT INTO local_log VALUES ('transfer 1');
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance - 10 WHERE id = 1');
SELECT dtx.exec('loop_b', 'UPDATE accounts SET balance = balance + 10 WHERE id = 1');
SELECT server, connected, in_transaction FROM dtx.participants ORDER BY server;
COMMIT;
SELECT * FROM local_log;
SELECT * FROM dtx.query('loop_a', 'SELECT id, balance FROM accounts WHERE id = 1') AS r(id int, balance numeric);
SELECT * FROM dtx.query('loop_b', 'SELECT id, balance FROM accounts WHERE id = 1') AS r(id int, balance numeric);
SELECT server, in_transaction FROM dtx.participants ORDER BY server;

-- rollback: nothing stays, locally or remotely
BEGIN;
INSERT INTO local_log VALUES ('transfer 2');
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance - 50 WHERE id = 2');
SELECT dtx.exec('loop_b', 'UPDATE accounts SET balance = balance + 50 WHERE id = 2');
ROLLBACK;
SELECT count(*) FROM local_log;
SELECT total('loop_a') AS a, total('loop_b') AS b;

-- an error anywhere rolls everything back
BEGIN;
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance - 10 WHERE id = 3');
SELECT 1 / 0;
COMMIT;
SELECT total('loop_a') AS a;

-- a remote constraint violation aborts the local transaction too
BEGIN;
INSERT INTO local_log VALUES ('overdraft');
SELECT dtx.exec('loop_b', 'UPDATE accounts SET balance = balance + 1000 WHERE id = 4');
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance - 1000 WHERE id = 4');
COMMIT;
SELECT count(*) FROM local_log;
SELECT total('loop_a') AS a, total('loop_b') AS b;

-- ROLLBACK TO SAVEPOINT undoes remote work done after the savepoint
BEGIN;
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance + 1 WHERE id = 5');
SAVEPOINT sp1;
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance + 100 WHERE id = 5');
SELECT dtx.exec('loop_b', 'UPDATE accounts SET balance = balance + 100 WHERE id = 5');
SAVEPOINT sp2;
SELECT dtx.exec('loop_b', 'UPDATE accounts SET balance = balance + 1000 WHERE id = 5');
ROLLBACK TO SAVEPOINT sp1;
SELECT * FROM dtx.query('loop_a', 'SELECT balance FROM accounts WHERE id = 5') AS r(balance numeric);
SELECT * FROM dtx.query('loop_b', 'SELECT balance FROM accounts WHERE id = 5') AS r(balance numeric);
-- work after the rollback to savepoint still counts
SAVEPOINT sp3;
SELECT dtx.exec('loop_b', 'UPDATE accounts SET balance = balance + 2 WHERE id = 5');
RELEASE SAVEPOINT sp3;
COMMIT;
SELECT * FROM dtx.query('loop_a', 'SELECT balance FROM accounts WHERE id = 5') AS r(balance numeric);
SELECT * FROM dtx.query('loop_b', 'SELECT balance FROM accounts WHERE id = 5') AS r(balance numeric);

-- a remote error caught by a PL/pgSQL exception block (a subtransaction)
-- leaves the rest of the global transaction usable
BEGIN;
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance + 7 WHERE id = 1');
SELECT expect_error($$SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = -1 WHERE id = 1')$$);
SELECT expect_error($$SELECT dtx.exec('loop_a', 'SELEC 1')$$);
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance + 1 WHERE id = 1');
COMMIT;
SELECT * FROM dtx.query('loop_a', 'SELECT balance FROM accounts WHERE id = 1') AS r(balance numeric);

-- the first use of a participant inside a subtransaction
BEGIN;
SAVEPOINT s;
SELECT dtx.exec('loop_b', 'UPDATE accounts SET balance = balance + 5 WHERE id = 1');
ROLLBACK TO SAVEPOINT s;
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance + 5 WHERE id = 2');
COMMIT;
SELECT * FROM dtx.query('loop_a', 'SELECT balance FROM accounts WHERE id = 2') AS r(balance numeric);
SELECT * FROM dtx.query('loop_b', 'SELECT balance FROM accounts WHERE id = 1') AS r(balance numeric);

-- the remote transaction runs at the local isolation level
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM dtx.query('loop_a', 'SHOW transaction_isolation') AS r(level text);
COMMIT;
BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY;
SELECT * FROM dtx.query('loop_a', 'SELECT current_setting(''transaction_isolation''), current_setting(''transaction_read_only'')') AS r(level text, ro text);
SELECT expect_error($$SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = 0')$$);
COMMIT;
SELECT * FROM dtx.query('loop_a', 'SHOW transaction_isolation') AS r(level text);

-- dtx.query: several columns and types, NULLs, zero rows, many rows
SELECT * FROM dtx.query('loop_a', $$SELECT 1::int, 'x'::text, NULL::date, '2024-02-29'::date, '1 day'::interval, 1.5::float8, '{1,2}'::int[]$$)
  AS r(i int, t text, n date, d date, iv interval, f float8, arr int[]);
SELECT count(*) FROM dtx.query('loop_a', 'SELECT 1 WHERE false') AS r(x int);
SELECT count(*), sum(x) FROM dtx.query('loop_a', 'SELECT g FROM generate_series(1, 100000) g') AS r(x int);
-- rows affected
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance WHERE id <= 3');
SELECT dtx.exec('loop_a', 'SELECT 1');
-- several statements: the last one counts
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance WHERE id = 1; UPDATE accounts SET balance = balance');

-- dtx.exec used many times in one transaction reuses one connection
BEGIN;
SELECT sum(dtx.exec('loop_a', 'UPDATE accounts SET balance = balance + 0 WHERE id = ' || g)) FROM generate_series(1, 50) g;
SELECT count(*) FROM dtx.connections() WHERE server = 'loop_a';
COMMIT;

-- user PREPARE TRANSACTION of a transaction with participants is refused
BEGIN;
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance + 1000 WHERE id = 1');
PREPARE TRANSACTION 'mine';
SELECT * FROM dtx.query('loop_a', 'SELECT balance FROM accounts WHERE id = 1') AS r(balance numeric);
SELECT count(*) FROM pg_prepared_xacts;

-- transaction control sent through dtx.exec is detected and refused
-- (the remote transaction was ended behind pg_dtx's back, so even a caught
-- error leaves the local transaction unable to commit)
SELECT dtx.exec('loop_a', 'COMMIT');
SELECT dtx.exec('loop_a', 'ROLLBACK; SELECT 1');
SELECT expect_error($$SELECT dtx.exec('loop_a', 'COMMIT')$$);
-- the connection was discarded and the next use is clean
SELECT dtx.exec('loop_a', 'SELECT 1');

-- disconnect
SELECT dtx.disconnect('loop_b');
SELECT server, connected FROM dtx.participants ORDER BY server;
SELECT dtx.disconnect();
SELECT server, connected FROM dtx.participants ORDER BY server;
BEGIN;
SELECT dtx.exec('loop_a', 'SELECT 1');
SELECT dtx.disconnect('loop_a');
COMMIT;

-- probing
SELECT server, reachable, max_prepared_transactions, error FROM dtx.probe() ORDER BY server;

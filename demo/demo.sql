-- demo/demo.sql — run by demo/run-demo on the coordinator, with psql
-- variables :a_port and :b_port (participants a and b on 127.0.0.1).
\pset footer off
\set VERBOSITY default

\echo '-- 1. Install pg_dtx and declare the two participant databases as foreign servers.'
CREATE EXTENSION pg_dtx;
CREATE SERVER bank_a FOREIGN DATA WRAPPER pg_dtx
    OPTIONS (host '127.0.0.1', port :'a_port', dbname 'postgres');
CREATE SERVER bank_b FOREIGN DATA WRAPPER pg_dtx
    OPTIONS (host '127.0.0.1', port :'b_port', dbname 'postgres');
CREATE USER MAPPING FOR CURRENT_USER SERVER bank_a OPTIONS (user 'postgres');
CREATE USER MAPPING FOR CURRENT_USER SERVER bank_b OPTIONS (user 'postgres');
SELECT server, reachable, max_prepared_transactions, server_version FROM dtx.probe();

\echo
\echo '-- 2. A transfer across two databases inside one local transaction: both sides commit with it.'
BEGIN;
SELECT dtx.exec('bank_a', 'UPDATE accounts SET balance = balance - 30 WHERE id = 1') AS rows_a;
SELECT dtx.exec('bank_b', 'UPDATE accounts SET balance = balance + 30 WHERE id = 1') AS rows_b;
SELECT server, connected, in_transaction FROM dtx.participants;
COMMIT;
SELECT 'a' AS db, * FROM dtx.query('bank_a', 'SELECT id, owner, balance FROM accounts ORDER BY id')
         AS t(id int, owner text, balance numeric)
UNION ALL
SELECT 'b', * FROM dtx.query('bank_b', 'SELECT id, owner, balance FROM accounts ORDER BY id')
         AS t(id int, owner text, balance numeric);

\echo
\echo '-- 3. The local transaction rolls back: the remote work is rolled back too.'
BEGIN;
SELECT dtx.exec('bank_a', 'UPDATE accounts SET balance = 0 WHERE id = 2') AS rows_a;
SELECT dtx.exec('bank_b', 'DELETE FROM accounts') AS rows_b;
ROLLBACK;
SELECT (SELECT sum(balance) FROM dtx.query('bank_a', 'SELECT balance FROM accounts') AS t(balance numeric)) AS total_a,
       (SELECT count(*)     FROM dtx.query('bank_b', 'SELECT 1 FROM accounts') AS t(x int)) AS accounts_b;

\echo
\echo '-- 4. ROLLBACK TO SAVEPOINT undoes the remote work done since the savepoint.'
BEGIN;
SELECT dtx.exec('bank_a', $$INSERT INTO accounts VALUES (3, 'carol@a', 10)$$) AS kept;
SAVEPOINT before_mistake;
SELECT dtx.exec('bank_a', $$INSERT INTO accounts VALUES (4, 'mallory@a', 1000000)$$) AS undone;
ROLLBACK TO SAVEPOINT before_mistake;
COMMIT;
SELECT * FROM dtx.query('bank_a', 'SELECT id, owner FROM accounts WHERE id > 2 ORDER BY id') AS t(id int, owner text);

\echo
\echo '-- 5. A remote error arrives with its own SQLSTATE and the remote SQL, and aborts the transaction.'
\set ON_ERROR_STOP off
\set VERBOSITY verbose
BEGIN;
SELECT dtx.exec('bank_a', 'UPDATE accounts SET balance = balance + 50 WHERE id = 2');
SELECT dtx.exec('bank_b', 'UPDATE accounts SET balance = balance - 500 WHERE id = 2');
COMMIT;
\set VERBOSITY default
\set ON_ERROR_STOP on
SELECT * FROM dtx.query('bank_a', 'SELECT id, balance FROM accounts WHERE id = 2') AS t(id int, balance numeric);

\echo
\echo '-- 6. Atomic commit: a transaction that writes on two databases is prepared on both, then committed.'
SELECT prepared, committed FROM dtx.stats;
BEGIN;
SELECT dtx.exec('bank_a', 'UPDATE accounts SET balance = balance - 10 WHERE id = 1') AS rows_a;
SELECT dtx.exec('bank_b', 'UPDATE accounts SET balance = balance + 10 WHERE id = 1') AS rows_b;
COMMIT;
SELECT prepared, committed FROM dtx.stats;

\echo
\echo '-- 7. The coordinator stops right after its local commit, before COMMIT PREPARED (fault injection).'
\echo '--    Both participants hold a prepared transaction; the decision row says commit; recovery finishes it.'
ALTER SYSTEM SET dtx.recovery_interval = 0;   -- pause the recovery worker, to look at the in-doubt state
SELECT pg_reload_conf(), pg_sleep(0.5);
SET dtx.fault_point = 'after_local_commit';
BEGIN;
SELECT dtx.exec('bank_a', 'UPDATE accounts SET balance = balance - 5 WHERE id = 2') AS rows_a;
SELECT dtx.exec('bank_b', 'UPDATE accounts SET balance = balance + 5 WHERE id = 2') AS rows_b;
COMMIT;
RESET dtx.fault_point;
SELECT server, decision, coordinator_xid IS NOT NULL AS has_xid FROM dtx.in_doubt ORDER BY server;
SELECT server, decision, action FROM dtx.recover() ORDER BY server;
SELECT count(*) AS still_in_doubt FROM dtx.in_doubt;
SELECT 'a' AS db, * FROM dtx.query('bank_a', 'SELECT id, balance FROM accounts WHERE id = 2') AS t(id int, balance numeric)
UNION ALL
SELECT 'b', * FROM dtx.query('bank_b', 'SELECT id, balance FROM accounts WHERE id = 2') AS t(id int, balance numeric);
ALTER SYSTEM RESET dtx.recovery_interval;
SELECT pg_reload_conf();

\echo
\echo '-- 8. A participant that is down: the error is DX001 (participant_unavailable).'
\! pg_ctl -D "$DEMO_B_DATA" stop -m immediate >/dev/null
\set ON_ERROR_STOP off
\set VERBOSITY verbose
SELECT dtx.exec('bank_b', 'SELECT 1');
\set VERBOSITY default
\set ON_ERROR_STOP on
SELECT server, reachable, error IS NOT NULL AS has_error FROM dtx.probe();

\echo
\echo '-- 9. Leases and fencing tokens.  Worker A holds the lease "ledger-writer" and pauses longer than its TTL'
\echo '--    (a GC pause); B acquires the lease with a higher token and writes; A wakes up and writes with its'
\echo '--    old token: the fenced table rejects it (DX010).  A lease alone does not exclude; fencing does.'
CREATE TABLE ledger (id int PRIMARY KEY, balance int NOT NULL, fence_token bigint);
SELECT dtx.fence_table('ledger');
SELECT token AS a_token FROM dtx.lease_acquire('ledger-writer', '1 s', holder => 'worker A') \gset
\echo 'worker A got fencing token' :a_token
INSERT INTO ledger VALUES (1, 100, :a_token);
SELECT pg_sleep(1.5) AS "A is paused for 1.5 s";
SELECT token AS b_token FROM dtx.lease_acquire('ledger-writer', '30 s', holder => 'worker B') \gset
\echo 'worker B got fencing token' :b_token
SELECT name, holder, token FROM dtx.leases;
UPDATE ledger SET balance = 50, fence_token = :b_token WHERE id = 1;
\set ON_ERROR_STOP off
\set VERBOSITY verbose
UPDATE ledger SET balance = 0, fence_token = :a_token WHERE id = 1;
SELECT dtx.lease_renew('ledger-writer', :a_token, '30 s');
\set VERBOSITY default
\set ON_ERROR_STOP on
SELECT * FROM ledger;
SELECT dtx.lease_release('ledger-writer', :b_token) AS b_released;

\echo
\echo '-- 10. Transactional outbox.  The order row and its message commit together; the pg_dtx worker is woken'
\echo '--     at commit and delivers the message to a table in bank_a (which does not need pg_dtx):'
\echo '--     INSERT ... ON CONFLICT (id) DO NOTHING, so a redelivery has no effect.  A rolled-back order sends nothing.'
SELECT dtx.exec('bank_a', 'CREATE TABLE order_events (id bigint PRIMARY KEY, topic text, key text, payload jsonb, headers jsonb, created_at timestamptz, received_at timestamptz DEFAULT clock_timestamp())') AS created;
SELECT dtx.sink_create('billing', 'postgres', '{"server": "bank_a", "table": "order_events"}') AS sink_id;
SELECT dtx.route_create('orders.*', 'billing') AS unrouted_taken_over;
CREATE TABLE orders (id int PRIMARY KEY, total numeric NOT NULL);
BEGIN;
INSERT INTO orders VALUES (42, 99.50);
SELECT dtx.outbox_send('orders.created', '{"order": 42, "total": 99.5}', key => 'order-42') AS message_id;
COMMIT;
BEGIN;
INSERT INTO orders VALUES (43, 10);
SELECT dtx.outbox_send('orders.created', '{"order": 43, "total": 10}', key => 'order-43') AS message_id;
ROLLBACK;
DO $$ BEGIN FOR i IN 1..500 LOOP EXIT WHEN NOT EXISTS (SELECT FROM dtx.outbox); PERFORM pg_sleep(0.01); END LOOP; END $$;
SELECT id, topic, key, payload, received_at - created_at < interval '1 s' AS "delivered within a second"
  FROM dtx.query('bank_a', 'SELECT id, topic, key, payload::text, created_at, received_at FROM order_events')
       AS t(id bigint, topic text, key text, payload jsonb, created_at timestamptz, received_at timestamptz);
SELECT sink, ready, in_flight, delivered, dead, breaker FROM dtx.outbox_status;

\echo
\echo '-- 11. A sink that is down (bank_b, stopped in step 8): the message waits and is retried with backoff;'
\echo '--     once bank_b is back, it is delivered.  Consumers get exactly-once effect with dtx.inbox_accept.'
SELECT dtx.sink_create('audit', 'postgres', '{"server": "bank_b", "table": "audit_events", "backoff_base_ms": 200, "backoff_max_ms": 1000}') AS sink_id;
SELECT dtx.route_create('orders.*', 'audit') AS unrouted_taken_over;
SELECT dtx.outbox_send('orders.shipped', '{"order": 42}', key => 'order-42') AS message_id;
SELECT pg_sleep(1);
SELECT sink, ready + deferred AS waiting, delivered, left(last_error, 60) AS last_error FROM dtx.outbox_status WHERE sink = 'audit';
\! pg_ctl -D "$DEMO_B_DATA" -l "$DEMO_DIR/b.log" start -w >/dev/null
SELECT dtx.exec('bank_b', 'CREATE TABLE audit_events (id bigint PRIMARY KEY, topic text, key text, payload jsonb, headers jsonb, created_at timestamptz)') AS created;
DO $$ BEGIN FOR i IN 1..1000 LOOP EXIT WHEN NOT EXISTS (SELECT FROM dtx.outbox); PERFORM pg_sleep(0.01); END LOOP; END $$;
SELECT sink, ready + deferred AS waiting, delivered, dead, breaker FROM dtx.outbox_status ORDER BY sink;
SELECT * FROM dtx.query('bank_b', 'SELECT id, topic, payload::text FROM audit_events') AS t(id bigint, topic text, payload jsonb);
-- the consumer side: the first delivery of message 1 has its effect, a redelivery does not
SELECT dtx.inbox_accept('1', 'billing') AS first_time, dtx.inbox_accept('1', 'billing') AS redelivered;

\echo
\echo '-- 12. Isolation lab: write skew, live.  Two real sessions of this database play two on-call doctors;'
\echo '--     each checks that two doctors are on call, then goes off call.  At repeatable read both commit'
\echo '--     and nobody is on call; at serializable bob''s commit fails with 40001 and the invariant holds.'
SELECT step, session, statement, outcome, result FROM dtx.lab_write_skew('repeatable read');
SELECT step, session, outcome, result, sqlstate, message FROM dtx.lab_write_skew('serializable') WHERE step IS NULL OR step >= 7;
\echo '--     The 15 Hermitage anomaly tests, run live at each level and folded into Hermitage''s table'
\echo '--     (possible = this level lets the anomaly happen; computed from this run, not from a stored table):'
SELECT anomaly,
       CASE WHEN bool_and(result = 'prevented') FILTER (WHERE level = 'read committed') THEN 'prevented' ELSE 'possible' END AS "read committed",
       CASE WHEN bool_and(result = 'prevented') FILTER (WHERE level = 'repeatable read') THEN 'prevented' ELSE 'possible' END AS "repeatable read",
       CASE WHEN bool_and(result = 'prevented') FILTER (WHERE level = 'serializable') THEN 'prevented' ELSE 'possible' END AS "serializable"
  FROM dtx.lab_anomalies() WITH ORDINALITY GROUP BY anomaly ORDER BY min(ordinality);

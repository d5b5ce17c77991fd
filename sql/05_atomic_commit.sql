--
-- Atomic commit on loopback participants: the commit protocol, an in-doubt
-- transaction shown and resolved through the admin surface, bad input.
-- Automatic recovery is off in this instance (test/pg_dtx.conf).
--
SHOW dtx.recovery_interval;
SHOW dtx.commit_timeout;

CREATE TABLE atomic_log (id int PRIMARY KEY);
SELECT dtx.exec('loop_a', $$CREATE FUNCTION bump(int) RETURNS int LANGUAGE sql AS
                            'UPDATE accounts SET balance = balance + $1 WHERE id = 5 RETURNING 1'$$);

CREATE TEMP TABLE s0 AS SELECT * FROM dtx.stats;
CREATE FUNCTION stats_delta() RETURNS TABLE (one_phase bigint, prepared bigint, committed bigint, aborted bigint)
LANGUAGE sql AS $$
  SELECT s.one_phase_commits - s0.one_phase_commits, s.prepared - s0.prepared,
         s.committed - s0.committed, s.aborted - s0.aborted
    FROM dtx.stats s, s0
$$;

-- two writers: prepared on both, then committed
BEGIN;
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance - 7 WHERE id = 1');
SELECT dtx.exec('loop_b', 'UPDATE accounts SET balance = balance + 7 WHERE id = 1');
COMMIT;
SELECT * FROM stats_delta();

-- a SELECT that writes (through a function) is found out at commit
BEGIN;
SELECT * FROM dtx.query('loop_a', 'SELECT bump(1)') AS t(x int);
INSERT INTO atomic_log VALUES (1);
COMMIT;
SELECT * FROM stats_delta();

-- readers get a plain COMMIT: a local write with two read-only participants
BEGIN;
SELECT * FROM dtx.query('loop_a', 'SELECT count(*) FROM accounts') AS t(n bigint);
SELECT * FROM dtx.query('loop_b', 'SELECT count(*) FROM accounts') AS t(n bigint);
INSERT INTO atomic_log VALUES (2);
COMMIT;
SELECT * FROM stats_delta();

-- a failed vote (deferred unique violation at PREPARE) aborts everything
SELECT dtx.exec('loop_b', 'CREATE TABLE d (id int UNIQUE DEFERRABLE INITIALLY DEFERRED); INSERT INTO d VALUES (1)');
SELECT balance AS a2 FROM dtx.query('loop_a', 'SELECT balance FROM accounts WHERE id = 2') AS t(balance numeric) \gset
BEGIN;
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance + 1000 WHERE id = 2');
SELECT dtx.exec('loop_b', 'INSERT INTO d VALUES (1)');
COMMIT;
SELECT * FROM stats_delta();
SELECT balance - :a2 AS change_on_a FROM dtx.query('loop_a', 'SELECT balance FROM accounts WHERE id = 2') AS t(balance numeric);

-- the coordinator stops after its local commit, before COMMIT PREPARED
SELECT (SELECT balance FROM dtx.query('loop_a', 'SELECT balance FROM accounts WHERE id = 3') AS t(balance numeric)) AS a3,
       (SELECT balance FROM dtx.query('loop_b', 'SELECT balance FROM accounts WHERE id = 3') AS t(balance numeric)) AS b3 \gset
SET dtx.fault_point = 'after_local_commit';
BEGIN;
SELECT dtx.exec('loop_a', 'UPDATE accounts SET balance = balance - 3 WHERE id = 3');
SELECT dtx.exec('loop_b', 'UPDATE accounts SET balance = balance + 3 WHERE id = 3');
COMMIT;
RESET dtx.fault_point;
SELECT server, decision, owner = current_user AS owner_ok, age >= interval '0' AS age_ok,
       gid LIKE 'dtx\_%' AS gid_ok, coordinator_xid IS NOT NULL AS xid_ok, error
  FROM dtx.in_doubt ORDER BY server;
SELECT ours, decision FROM dtx.xa_recover('loop_a');

-- manual resolution that contradicts the decision is refused
SELECT regexp_replace(expect_error(format('SELECT dtx.xa_rollback(%L, %L)', 'loop_a',
         (SELECT gid FROM dtx.in_doubt WHERE server = 'loop_a'))), 'dtx_[0-9a-f_]+', 'GID');

-- dtx.recover() finishes it, and deletes the finished decision rows
SELECT server, decision, action, error FROM dtx.recover() ORDER BY server;
SELECT count(*) AS in_doubt FROM dtx.in_doubt;
SELECT count(*) AS decision_rows FROM dtx.decisions;
SELECT (SELECT balance FROM dtx.query('loop_a', 'SELECT balance FROM accounts WHERE id = 3') AS t(balance numeric)) - :a3 AS change_on_a,
       (SELECT balance FROM dtx.query('loop_b', 'SELECT balance FROM accounts WHERE id = 3') AS t(balance numeric)) - :b3 AS change_on_b;
SELECT * FROM dtx.recover();

-- bad input
SELECT expect_error($$SELECT dtx.xa_commit('loop_a', 'not_a_pg_dtx_gid')$$);
SELECT expect_error($$SELECT dtx.xa_commit('nosuch', 'x')$$);
SELECT expect_error($$SELECT dtx.xa_commit(NULL, 'x')$$);
SELECT expect_error($$SELECT dtx.xa_rollback('loop_a', NULL)$$);
SELECT expect_error($$SELECT * FROM dtx.xa_recover(NULL)$$);
SELECT expect_error($$SELECT * FROM dtx.recover('nosuch')$$);
SELECT expect_error($$SET dtx.fault_point = 'nowhere'$$);
SELECT expect_error($$SET dtx.fault_action = 'explode'$$);
SELECT expect_error($$SET dtx.commit_timeout = -1$$);
SELECT expect_error($$SET dtx.recovery_interval = 5$$);

-- the admin surface and the fault settings are not for everyone
CREATE ROLE regress_dtx_user;
SET ROLE regress_dtx_user;
SELECT expect_error($$SET dtx.fault_point = 'after_prepare'$$);
SELECT expect_error($$SELECT * FROM dtx.in_doubt$$);
SELECT expect_error($$SELECT * FROM dtx.recover()$$);
SELECT expect_error($$SELECT dtx.xa_commit('loop_a', 'x')$$);
SELECT expect_error($$SELECT * FROM dtx.decisions$$);
SELECT count(*) FROM dtx.stats;
RESET ROLE;
DROP ROLE regress_dtx_user;

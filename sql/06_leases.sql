--
-- Leases and fenced tables: the SQL surface, bad input, and the GC-pause
-- story in one session.  (Concurrency is in test/specs/lease_*.spec, crashes
-- and promotion in test/t/005_leases.pl.)
--

-- dtx.lease_status in a database that has not used leases since the start
-- reads the durable row: no token yet, and no relcache reference leaked
-- (a WARNING at the end of the transaction if one were)
SELECT current_database() AS regress_db \gset
CREATE DATABASE dtx_regress_fresh;
\c dtx_regress_fresh
CREATE EXTENSION pg_dtx;
SELECT next_token, reserved_through, grace_until FROM dtx.lease_status;
BEGIN;
SELECT next_token IS NULL AS unused FROM dtx.lease_status;
SELECT next_token IS NULL AS unused FROM dtx.lease_status;
COMMIT;
\c :regress_db
DROP DATABASE dtx_regress_fresh WITH (FORCE);

-- tokens start at 1 in a new database and increase by one per grant
SELECT token, expires_at > now() + interval '50 s' AS expires_in_a_minute
  FROM dtx.lease_acquire('job:nightly', '1 min', holder => 'worker-1');
SELECT name, holder, token, waiters, state, pid = pg_backend_pid() AS mine
  FROM dtx.leases;
-- held: a second acquire without wait gets nothing
SELECT * FROM dtx.lease_acquire('job:nightly', '1 min');
-- a wait that runs out returns nothing too, and leaves no waiter behind
SELECT * FROM dtx.lease_acquire('job:nightly', '1 min', wait => '50 ms');
SELECT name, waiters FROM dtx.leases;
-- renew is compare-and-set on (name, token)
SELECT dtx.lease_renew('job:nightly', 1, '2 min') > now() + interval '110 s' AS renewed;
SELECT expect_error($$SELECT dtx.lease_renew('job:nightly', 7, '1 min')$$);
SELECT expect_error($$SELECT dtx.lease_renew('job:other', 1, '1 min')$$);
-- release with a wrong token does nothing; with the right one it frees
SELECT dtx.lease_release('job:nightly', 2) AS wrong_token;
SELECT dtx.lease_release('job:nightly', 1) AS released;
SELECT dtx.lease_release('job:nightly', 1) AS again;
SELECT count(*) FROM dtx.leases;
-- the next holder gets a higher token
SELECT token FROM dtx.lease_acquire('job:nightly', '1 min');
-- an expired lease is lost: renew fails, release says false, anyone may take it
SELECT token FROM dtx.lease_acquire('short', '100 ms');
SELECT pg_sleep(0.2);
SELECT expect_error($$SELECT dtx.lease_renew('short', 3, '1 min')$$) LIKE 'DX011: lease "short" is not held with token 3' AS renew_after_expiry;
SELECT token FROM dtx.lease_acquire('short', '1 min');
SELECT dtx.lease_release('short', 3) AS release_old_token;
-- names are whole texts: no hash collisions, case and bytes matter
SELECT token FROM dtx.lease_acquire('Short', '1 min');
SELECT token FROM dtx.lease_acquire(repeat('x', 255), '1 min');
SELECT name, token FROM dtx.leases ORDER BY token;
-- breaking a lease (administrators) revokes it and returns a higher token
SELECT dtx.lease_break('job:nightly') AS broken_token;
SELECT dtx.lease_break('job:nightly') AS not_held;
SELECT expect_error($$SELECT dtx.lease_renew('job:nightly', 2, '1 min')$$);
-- the counter: reserved ahead in one durable write
SELECT next_token, reserved_through, max_ttl, grace_until, leases_in_use, max_leases
  FROM dtx.lease_status;

-- session leases go away with the session (as advisory locks do)
SELECT token IS NOT NULL AS got FROM dtx.lease_acquire('sess', '1 min', session => true);
SELECT state, pid = pg_backend_pid() AS mine FROM dtx.leases WHERE name = 'sess';

-- a lease belongs to the role that acquired it: other roles see it but not
-- its token, and cannot renew or release it, whatever token they bring
CREATE ROLE regress_lease_app;
CREATE ROLE regress_lease_other;
CREATE TABLE guarded (shard text PRIMARY KEY, v int, fence_token bigint);
SELECT dtx.fence_table('guarded', 'shard', rule => 'holder');
GRANT INSERT, UPDATE ON guarded TO regress_lease_app, regress_lease_other;
SET ROLE regress_lease_app;
SELECT token AS app_token FROM dtx.lease_acquire('billing', '1 min') \gset
SELECT name, role, token = :app_token AS token_shown FROM dtx.leases WHERE name = 'billing';
INSERT INTO guarded VALUES ('billing', 1, :app_token);
RESET ROLE;
SET ROLE regress_lease_other;
SELECT name, role, state, token FROM dtx.leases WHERE name = 'billing';
-- the attack of issue 13: the token read from dtx.leases, then the real one
SELECT expect_error($$SELECT dtx.lease_release('billing', (SELECT token FROM dtx.leases WHERE name = 'billing'))$$);
SELECT dtx.lease_release('billing', :app_token);
SELECT expect_error(format('SELECT dtx.lease_renew(%L, %s, %L)', 'billing', :app_token, '1 min'));
SELECT expect_error(format('SELECT dtx.lease_release(%L, %s)', 'billing', :app_token + 1000));
SELECT expect_error(format('UPDATE guarded SET v = 2, fence_token = %s', :app_token));
SELECT * FROM dtx.lease_acquire('billing', '1 min');
-- a lease nobody holds: release says false, renew DX011, as for anyone
SELECT dtx.lease_release('nobody-holds-this', 1) AS released;
SELECT expect_error($$SELECT dtx.lease_renew('nobody-holds-this', 1, '1 min')$$);
RESET ROLE;
-- still app's lease, with its token
SELECT name, role, state, token = :app_token AS same_token FROM dtx.leases WHERE name = 'billing';
-- a member of the role has its privileges: sees the token, renews, writes, releases
GRANT regress_lease_app TO regress_lease_other;
SET ROLE regress_lease_other;
SELECT token = :app_token AS token_shown FROM dtx.leases WHERE name = 'billing';
SELECT dtx.lease_renew('billing', :app_token, '1 min') > now() AS renewed;
UPDATE guarded SET v = 3, fence_token = :app_token;
SELECT dtx.lease_release('billing', :app_token) AS released;
RESET ROLE;
REVOKE regress_lease_app FROM regress_lease_other;
-- superusers may act on any lease; a lease whose role was dropped is theirs alone
SET ROLE regress_lease_app;
SELECT token AS app_token FROM dtx.lease_acquire('billing', '1 min') \gset
RESET ROLE;
SELECT dtx.lease_renew('billing', :app_token, '1 min') > now() AS superuser_renewed;
DROP TABLE guarded;
DROP ROLE regress_lease_app;
SELECT name, role, state, token = :app_token AS token_shown FROM dtx.leases WHERE name = 'billing';
SET ROLE regress_lease_other;
\set VERBOSITY terse
SELECT dtx.lease_release('billing', :app_token);
\set VERBOSITY default
RESET ROLE;
SELECT dtx.lease_release('billing', :app_token) AS superuser_released;
DROP ROLE regress_lease_other;

-- quotas for roles that are not superuser: dtx.max_leases_per_role leases
-- at once (all databases), TTLs up to dtx.lease_user_max_ttl (default 5 min)
CREATE ROLE regress_lease_flood;
CREATE ROLE regress_lease_other;
SHOW dtx.max_leases_per_role;
SHOW dtx.lease_user_max_ttl;
SET dtx.max_leases_per_role = 5;
SET ROLE regress_lease_flood;
-- the flood of issue 13
SELECT expect_error($$SELECT count(*) FROM generate_series(1, 5000) g, LATERAL dtx.lease_acquire('flood' || g, '1h')$$);
SELECT expect_error($$SELECT count(*) FROM generate_series(1, 5000) g, LATERAL dtx.lease_acquire('flood' || g, '1 min')$$);
SELECT count(*) AS held FROM dtx.leases WHERE name LIKE 'flood%';
SELECT * FROM dtx.lease_acquire('flood-more', '1 min');
SELECT * FROM dtx.lease_acquire('flood-more', '1 min', wait => '1 min');
-- renewals are bounded the same way
SELECT token AS flood_token FROM dtx.leases WHERE name = 'flood1' \gset
SELECT expect_error(format('SELECT dtx.lease_renew(%L, %s, %L)', 'flood1', :flood_token, '6 min'));
SELECT dtx.lease_renew('flood1', :flood_token, '5 min') > now() AS renewed;
-- the settings are the administrator's
SELECT expect_error($$SET dtx.max_leases_per_role = -1$$);
SELECT expect_error($$SET dtx.lease_user_max_ttl = '1h'$$);
-- one released: room for one more
SELECT dtx.lease_release('flood1', :flood_token) AS released;
SELECT token IS NOT NULL AS got FROM dtx.lease_acquire('flood-more', '1 min');
RESET ROLE;
-- room for others
SET ROLE regress_lease_other;
SELECT token IS NOT NULL AS got FROM dtx.lease_acquire('not-a-flood', '1 min');
RESET ROLE;
-- superusers are bound by dtx.lease_max_ttl only
SELECT count(*) FROM generate_series(1, 8) g, LATERAL dtx.lease_acquire('admin' || g, '30 min') WHERE token IS NOT NULL;
-- expired leases do not count (they are swept when the quota is reached)
SELECT count(dtx.lease_break(name)) FROM dtx.leases WHERE name LIKE 'flood%' OR name LIKE 'admin%' OR name = 'not-a-flood';
SET ROLE regress_lease_flood;
SELECT count(*) FROM generate_series(1, 5) g, LATERAL dtx.lease_acquire('brief' || g, '100 ms') WHERE token IS NOT NULL;
SELECT pg_sleep(0.2);
SELECT count(*) FROM generate_series(1, 5) g, LATERAL dtx.lease_acquire('flood' || g, '1 min') WHERE token IS NOT NULL;
-- -1: no limit
RESET ROLE;
SET dtx.max_leases_per_role = -1;
SET ROLE regress_lease_flood;
SELECT count(*) FROM generate_series(6, 8) g, LATERAL dtx.lease_acquire('flood' || g, '1 min') WHERE token IS NOT NULL;
RESET ROLE;
RESET dtx.max_leases_per_role;
SELECT count(dtx.lease_break(name)) FROM dtx.leases WHERE name LIKE 'flood%';
DROP ROLE regress_lease_flood;
DROP ROLE regress_lease_other;

-- bad input: each is an error with an SQLSTATE
SELECT expect_error($$SELECT dtx.lease_acquire(NULL, '1 min')$$);
SELECT expect_error($$SELECT dtx.lease_acquire('', '1 min')$$);
SELECT expect_error($$SELECT dtx.lease_acquire(repeat('x', 256), '1 min')$$);
SELECT expect_error($$SELECT dtx.lease_acquire('a', NULL)$$);
SELECT expect_error($$SELECT dtx.lease_acquire('a', '0')$$);
SELECT expect_error($$SELECT dtx.lease_acquire('a', '-1 s')$$);
SELECT expect_error($$SELECT dtx.lease_acquire('a', '2 hours')$$);
SELECT expect_error($$SELECT dtx.lease_acquire('a', '100000000 years')$$);
SELECT expect_error($$SELECT dtx.lease_acquire('a', '1 min', wait => '-1 s')$$);
SELECT expect_error($$SELECT dtx.lease_acquire('a', '1 min', wait => NULL)$$);
SELECT expect_error($$SELECT dtx.lease_acquire('a', '1 min', holder => repeat('h', 128))$$);
SELECT expect_error($$SELECT dtx.lease_acquire('a', '1 min', session => NULL)$$);
SELECT expect_error($$SELECT dtx.lease_renew('a', NULL, '1 min')$$);
SELECT expect_error($$SELECT dtx.lease_renew('a', 1, '0')$$);
SELECT expect_error($$SELECT dtx.lease_release(NULL, 1)$$);
SELECT expect_error($$SELECT dtx.lease_break('')$$);
-- a wait longer than statement_timeout is cancelled cleanly: no waiter is left
\set VERBOSITY sqlstate
SET statement_timeout = '200ms';
SELECT * FROM dtx.lease_acquire('Short', '1 min', wait => '1 hour');
RESET statement_timeout;
\set VERBOSITY default
SELECT name, token, waiters FROM dtx.leases WHERE name = 'Short';
-- dtx.lease_max_ttl is the bound (superuser setting)
SET dtx.lease_max_ttl = '3h';
SELECT token IS NOT NULL AS got FROM dtx.lease_acquire('long', '2 hours');
RESET dtx.lease_max_ttl;

-- a full lease table is a clear error (dtx.max_leases = 64 in these tests);
-- expired entries are reclaimed when it fills up
CREATE FUNCTION fill_lease_table(prefix text, ttl interval) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..100 LOOP
    PERFORM dtx.lease_acquire(prefix || i, ttl);
  END LOOP;
  RETURN 'not full';
EXCEPTION WHEN configuration_limit_exceeded THEN
  RETURN 'full';
END $$;
SELECT fill_lease_table('fill-', '1 min');
SELECT expect_error($$SELECT dtx.lease_acquire('one-more', '1 min')$$);
SELECT count(dtx.lease_break(name)) > 50 AS broken FROM dtx.leases WHERE name LIKE 'fill-%';
SELECT fill_lease_table('brief-', '1 s');
SELECT pg_sleep(1.1);
SELECT token IS NOT NULL AS reclaimed FROM dtx.lease_acquire('one-more', '1 min');
SELECT leases_in_use <= 10 AS swept FROM dtx.lease_status;

-- ---------------------------------------------------------------------
-- Fenced tables
-- ---------------------------------------------------------------------
CREATE TABLE acct (id int PRIMARY KEY, balance int NOT NULL, fence_token bigint);
SELECT dtx.fence_table('acct');
INSERT INTO acct VALUES (1, 100, 33);
-- the GC-pause story: A holds token 33; B gets 34 and writes; A wakes up
UPDATE acct SET balance = 50, fence_token = 34 WHERE id = 1;        -- B
SELECT expect_error($$UPDATE acct SET balance = 0, fence_token = 33 WHERE id = 1$$); -- A
SELECT * FROM acct;
-- equal and higher tokens pass; the token may come from SET LOCAL
BEGIN;
SET LOCAL dtx.fencing_token = 35;
UPDATE acct SET balance = balance + 1 WHERE id = 1;
INSERT INTO acct (id, balance) VALUES (2, 7);
DELETE FROM acct WHERE id = 2;
SELECT * FROM acct ORDER BY id;
COMMIT;
-- an UPDATE that does not name its token would reuse the row's: refused
SELECT expect_error($$UPDATE acct SET balance = 1 WHERE id = 1$$);
SELECT expect_error($$DELETE FROM acct WHERE id = 1$$);
SELECT expect_error($$INSERT INTO acct VALUES (3, 1, NULL)$$);
SELECT expect_error($$INSERT INTO acct VALUES (3, 1, 0)$$);
-- the mark moves with the writing transaction: an aborted write leaves it
BEGIN;
UPDATE acct SET balance = 1, fence_token = 99 WHERE id = 1;
ROLLBACK;
SELECT relid::regclass, resource, token FROM dtx.fence_marks;
UPDATE acct SET balance = 2, fence_token = 36 WHERE id = 1;
-- a savepoint rolled back takes its raise with it
BEGIN;
SAVEPOINT s;
UPDATE acct SET balance = 3, fence_token = 40 WHERE id = 1;
ROLLBACK TO SAVEPOINT s;
UPDATE acct SET balance = 4, fence_token = 37 WHERE id = 1;
COMMIT;
SELECT relid::regclass, resource, token FROM dtx.fence_marks;
SELECT expect_error($$SET dtx.fencing_token = 'abc'$$);
SELECT expect_error($$SET dtx.fencing_token = '-5'$$);
-- dtx.fencing_token is read as bigint input is: blanks are allowed on both
-- sides of the number, not inside it
BEGIN;
SET LOCAL dtx.fencing_token = '38 ';
UPDATE acct SET balance = 5 WHERE id = 1;
SET LOCAL dtx.fencing_token = ' +38';
UPDATE acct SET balance = balance + 1 WHERE id = 1;
SET LOCAL dtx.fencing_token = '  ';
SELECT expect_error($$UPDATE acct SET balance = 7 WHERE id = 1$$) AS blank_is_unset;
COMMIT;
SELECT balance, fence_token FROM acct WHERE id = 1;
SELECT expect_error($$SET dtx.fencing_token = '38 39'$$);
SELECT expect_error($$SET dtx.fencing_token = '38x'$$);
SELECT expect_error($$SET dtx.fencing_token = '0'$$);
SELECT expect_error($$SET dtx.fencing_token = '9223372036854775808'$$);

-- one mark per resource when there is a resource column
CREATE TABLE jobs (queue text, id int, state text, fence_token bigint, PRIMARY KEY (queue, id));
SELECT dtx.fence_table('jobs', resource_column => 'queue');
INSERT INTO jobs VALUES ('mail', 1, 'new', 10), ('sms', 1, 'new', 5);
SELECT expect_error($$INSERT INTO jobs VALUES ('mail', 2, 'new', 9)$$);
INSERT INTO jobs VALUES ('sms', 2, 'new', 6);
-- moving a row to another resource needs a good token for both
SELECT expect_error($$UPDATE jobs SET queue = 'sms', fence_token = 7 WHERE queue = 'mail' AND id = 1$$);
SELECT resource, token FROM dtx.fence_marks WHERE relid = 'jobs'::regclass ORDER BY resource;

-- a partitioned table: its partitions share the marks of the fenced table
CREATE TABLE events (region text, id int, fence_token bigint) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
SELECT dtx.fence_table('events');
INSERT INTO events VALUES ('eu', 1, 20);
SELECT expect_error($$INSERT INTO events VALUES ('us', 1, 19)$$);
SELECT expect_error($$INSERT INTO events_us VALUES ('us', 2, 19)$$);
SELECT relid::regclass, resource, token FROM dtx.fence_marks WHERE relid = 'events'::regclass;
DROP TABLE events;
-- a leaf partition fenced on its own keeps its own marks
CREATE TABLE ranged (k int, fence_token bigint) PARTITION BY RANGE (k);
CREATE TABLE ranged_low PARTITION OF ranged FOR VALUES FROM (0) TO (10);
SELECT dtx.fence_table('ranged_low');
INSERT INTO ranged VALUES (1, 5);
SELECT relid::regclass, resource, token FROM dtx.fence_marks WHERE relid IN ('ranged'::regclass, 'ranged_low'::regclass);
DROP TABLE ranged;

-- rule holder: the token must hold the lease named by the resource, now
CREATE TABLE leader_state (shard text PRIMARY KEY, v int, fence_token bigint);
SELECT dtx.fence_table('leader_state', 'shard', rule => 'holder');
SELECT token AS t FROM dtx.lease_acquire('shard-1', '1 min') \gset
INSERT INTO leader_state VALUES ('shard-1', 1, :t);
SELECT regexp_replace(expect_error(format('INSERT INTO leader_state VALUES (%L, 1, %s)', 'shard-1', :t - 1)), '( )[0-9]+', '\1N', 'g');
SELECT regexp_replace(expect_error(format('INSERT INTO leader_state VALUES (%L, 1, %s)', 'shard-2', :t)), '( )[0-9]+', '\1N', 'g');
SELECT dtx.lease_release('shard-1', :t);
SELECT regexp_replace(expect_error(format('UPDATE leader_state SET v = 2, fence_token = %s', :t)), '( )[0-9]+', '\1N', 'g');

-- fencing bad input
CREATE TABLE nofence (id int, v int);
SELECT expect_error($$SELECT dtx.fence_table('nofence')$$);
CREATE TABLE inttoken (id int, fence_token int);
SELECT expect_error($$SELECT dtx.fence_table('inttoken')$$);
SELECT expect_error($$SELECT dtx.fence_table('acct', resource_column => 'nope')$$);
SELECT expect_error($$SELECT dtx.fence_table('acct', rule => 'strict')$$);
SELECT expect_error($$SELECT dtx.fence_table(NULL)$$);
SELECT expect_error($$SELECT dtx.fence_table('no_such_table')$$);
CREATE VIEW acct_v AS SELECT * FROM acct;
SELECT expect_error($$SELECT dtx.fence_table('acct_v')$$);
-- dropping the token column of a fenced table: writes fail, not crash
CREATE TABLE dropped (id int, fence_token bigint);
SELECT dtx.fence_table('dropped');
ALTER TABLE dropped DROP COLUMN fence_token;
SELECT expect_error($$INSERT INTO dropped VALUES (1)$$);
SELECT dtx.unfence_table('dropped');
INSERT INTO dropped VALUES (1);
SELECT dtx.unfence_table('dropped');
SELECT expect_error($$SELECT dtx.fence_check()$$);

-- unfence: writes are free again
SELECT dtx.unfence_table('acct');
UPDATE acct SET balance = 9, fence_token = 1 WHERE id = 1;
DROP TABLE acct, jobs, leader_state, nofence, inttoken, dropped CASCADE;
DROP FUNCTION fill_lease_table(text, interval);

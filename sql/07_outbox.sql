--
-- The transactional outbox: its SQL surface and bad input, and delivery to
-- a postgres sink (database dtx_regress_a on this instance, which does not
-- have pg_dtx).  HTTP, NOTIFY, failures, the circuit breaker and crashes
-- are in test/t/007_outbox.pl and test/t/008_outbox_crash.pl.
--

-- wait_outbox_empty(): polls until dtx.outbox holds no routed message (60 s at most)
CREATE FUNCTION wait_outbox_empty() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..6000 LOOP
    IF NOT EXISTS (SELECT FROM dtx.outbox WHERE sink_id <> 0) THEN
      RETURN 'empty';
    END IF;
    PERFORM pg_sleep(0.01);
    PERFORM pg_stat_clear_snapshot();
  END LOOP;
  RETURN 'still ' || (SELECT count(*) FROM dtx.outbox WHERE sink_id <> 0) || ' messages';
END $$;

SELECT dtx.exec('loop_a', $$CREATE TABLE events (id bigint PRIMARY KEY, topic text, key text,
    payload jsonb, headers jsonb, created_at timestamptz,
    CHECK (payload->>'reject' IS NULL))$$);

-- sinks and routes
SELECT dtx.sink_create('a', 'postgres', '{"server": "loop_a", "table": "events", "max_attempts": 2, "backoff_base_ms": 10}') > 0 AS created;
SELECT dtx.route_create('orders.*', 'a');
SELECT name, kind, options, breaker FROM dtx.outbox_sink;

-- messages are delivered after commit, never from a rolled-back transaction
BEGIN;
SELECT dtx.outbox_send('orders.created', '{"order": 1}', key => 'order-1') AS first_id \gset
SELECT dtx.outbox_send('orders.paid', '{"order": 1}', key => 'order-1',
                       headers => '{"trace": "abc"}') > :first_id AS ids_increase;
SELECT count(*) AS queued FROM dtx.outbox;
COMMIT;
BEGIN;
SELECT dtx.outbox_send('orders.created', '{"order": 2}', key => 'order-2') > 0 AS sent;
ROLLBACK;
SELECT wait_outbox_empty();
SELECT id - :first_id AS n, topic, key, payload, headers
  FROM dtx.query('loop_a', 'SELECT id, topic, key, payload::text, headers::text FROM events ORDER BY id')
       AS t(id bigint, topic text, key text, payload jsonb, headers jsonb);
SELECT sink, ready, in_flight, deferred, delivered, dead, breaker FROM dtx.outbox_status;
-- quotes, backslashes, braces, commas and non-ASCII arrive intact
SELECT dtx.outbox_send('orders.odd', $${"q": "say \"hi\"", "b": "back\\slash", "u": "ünïcödé", "s": "{a,b}", "n": null}$$,
                       key => 'k"e,y\{}', headers => $${"h": "\"\\"}$$) AS odd_id \gset
SELECT wait_outbox_empty();
SELECT t.key = 'k"e,y\{}' AS key_intact,
       t.payload = $${"q": "say \"hi\"", "b": "back\\slash", "u": "ünïcödé", "s": "{a,b}", "n": null}$$::jsonb AS payload_intact,
       t.headers = $${"h": "\"\\"}$$::jsonb AS headers_intact
  FROM dtx.query('loop_a', 'SELECT key, payload::text, headers::text FROM events WHERE id = ' || :odd_id)
       AS t(key text, payload jsonb, headers jsonb);

-- a row the target rejects (a CHECK constraint) is sent alone, retried,
-- then dead-lettered; the other messages of the batch are delivered
SELECT dtx.outbox_send('orders.x', jsonb_build_object('n', g) ||
                       CASE WHEN g = 2 THEN '{"reject": true}'::jsonb ELSE '{}' END) > 0 AS sent
  FROM generate_series(1, 3) g;
SELECT wait_outbox_empty();
SELECT payload FROM dtx.query('loop_a', $$SELECT payload::text FROM events WHERE topic = 'orders.x' ORDER BY id$$)
  AS t(payload jsonb);
SELECT sink, topic, payload, attempts, reason, last_error FROM dtx.outbox_dead;
-- fixed at the target, the dead letter is replayed and delivered once
SELECT dtx.exec('loop_a', 'ALTER TABLE events DROP CONSTRAINT events_payload_check');
SELECT dtx.outbox_replay(message_id) FROM dtx.outbox_dead;
SELECT wait_outbox_empty();
SELECT count(*) AS rows, count(DISTINCT id) AS ids
  FROM dtx.query('loop_a', $$SELECT id FROM events WHERE topic = 'orders.x'$$) AS t(id bigint);
SELECT count(*) AS dead FROM dtx.outbox_dead;
SELECT sink, delivered, dead FROM dtx.outbox_status;

-- a topic no route matches waits as "(unrouted)" until a route takes it
SELECT dtx.outbox_send('audit.login', '{"user": "ann"}') > 0 AS sent;
SELECT sink, ready FROM dtx.outbox_status WHERE sink = '(unrouted)';
SELECT dtx.route_create('audit.*', 'a') AS taken_over;
SELECT wait_outbox_empty();
SELECT count(*) FROM dtx.outbox;
SELECT payload FROM dtx.query('loop_a', $$SELECT payload::text FROM events WHERE topic = 'audit.login'$$)
  AS t(payload jsonb);
-- '*' is the only wildcard: % and _ are literal
SELECT dtx.route_create('odd_%', 'a');
SELECT dtx.outbox_send('oddX%', '{}') > 0 AS sent;
SELECT count(*) AS unrouted FROM dtx.outbox WHERE sink_id = 0;
DELETE FROM dtx.outbox WHERE sink_id = 0;
SELECT dtx.route_drop('odd_%', 'a'), dtx.route_drop('odd_%', 'a');

-- two sinks on the same server and user share one connection, which
-- carries one batch at a time: their batches are sent and read in turn,
-- every round (neither keeps the other off it), everything arrives once
-- and in order per key
SELECT dtx.exec('loop_a', $$CREATE TABLE events2 (LIKE events INCLUDING ALL)$$);
SELECT dtx.sink_create('a2', 'postgres', '{"server": "loop_a", "table": "events2", "batch_size": 100}') > 0 AS created;
SELECT dtx.route_create('twin.*', 'a2');
SELECT dtx.route_create('twin.*', 'a');
SELECT count(dtx.outbox_send('twin.x', jsonb_build_object('n', g), key => 'k' || (g % 50))) FROM generate_series(1, 2500) g;
SELECT wait_outbox_empty();
SELECT * FROM dtx.query('loop_a', $$SELECT (SELECT count(*) FROM events WHERE topic = 'twin.x'),
                                          (SELECT count(DISTINCT id) FROM events WHERE topic = 'twin.x'),
                                          (SELECT count(*) FROM events2), (SELECT count(DISTINCT id) FROM events2)$$)
         AS t(a bigint, a_distinct bigint, a2 bigint, a2_distinct bigint);
-- per key, in order: ids ascend with the received order in each target
SELECT * FROM dtx.query('loop_a', $$SELECT count(*) FROM (SELECT id < lag(id) OVER (PARTITION BY key ORDER BY xmin::text::bigint, ctid) AS back FROM events2) s WHERE back$$)
         AS t(out_of_order bigint);
SELECT sink, ready, in_flight, dead, breaker, last_error FROM dtx.outbox_status WHERE sink IN ('a', 'a2') ORDER BY sink;
SELECT dtx.route_drop('twin.*', 'a2'), dtx.route_drop('twin.*', 'a');
SELECT dtx.sink_drop('a2');

-- blocked keys and skipping a key's head (queued here without a worker
-- claim: the rows are moved straight into the future)
SELECT dtx.sink_create('parked', 'http', '{"url": "http://127.0.0.1:1/never"}') > 0 AS created;
SELECT dtx.route_create('parked', 'parked');
BEGIN;
SELECT dtx.outbox_send('parked', jsonb_build_object('n', g), 'k') > 0 FROM generate_series(1, 3) g;
UPDATE dtx.outbox SET next_attempt_at = 'infinity', attempts = 1, last_error = 'HTTP 503'
 WHERE topic = 'parked';
COMMIT;
SELECT sink, key, attempts, last_error, waiting FROM dtx.outbox_blocked_keys();
SELECT dtx.outbox_skip('parked', 'k') IS NOT NULL AS skipped;
SELECT d.payload, d.reason FROM dtx.outbox_dead d;
SELECT sink, key, waiting FROM dtx.outbox_blocked_keys();
SELECT dtx.outbox_skip('parked', 'no-such-key');
-- replay-all puts the dead letters of a sink back
SELECT dtx.outbox_replay_all('parked');
SELECT count(*) FROM dtx.outbox WHERE topic = 'parked';
-- a sink with messages is not dropped unless forced: they become dead letters
SELECT expect_error($$SELECT dtx.sink_drop('parked')$$);
SELECT dtx.sink_drop('parked', force => true);
SELECT sink, reason, count(*) FROM dtx.outbox_dead GROUP BY 1, 2;
SELECT count(*) FROM dtx.outbox_route r JOIN dtx.outbox_sink s USING (sink_id) WHERE s.name = 'parked';
DELETE FROM dtx.outbox_dead;

-- bad input: each gets an SQLSTATE, nothing queued is lost
SELECT dtx.outbox_send('orders.keep', '{"keep": true}') > 0 AS sent;
SELECT expect_error($$SELECT dtx.outbox_send(NULL, '{}')$$);
SELECT expect_error($$SELECT dtx.outbox_send('t', NULL)$$);
SELECT expect_error($$SELECT dtx.outbox_send('', '{}')$$);
SELECT expect_error($$SELECT dtx.outbox_send(repeat('t', 256), '{}')$$);
SELECT expect_error($$SELECT dtx.outbox_send('t', '{"a": ')$$);
SELECT expect_error($$SELECT dtx.outbox_send('t', '{}', repeat('k', 1025))$$);
SELECT expect_error($$SELECT dtx.outbox_send('t', '{}', headers => '[1]')$$);
SET dtx.outbox_max_payload = '1kB';
SELECT expect_error($$SELECT dtx.outbox_send('t', jsonb_build_object('pad', repeat('x', 2000)))$$);
RESET dtx.outbox_max_payload;
SELECT expect_error($$SELECT dtx.sink_create('x', 'kafka', '{}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', NULL, '{}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'http', '{}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'http', '{"url": "ftp://host/x"}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'http', '{"url": "http://h/", "headers": {"A": 1}}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'http', '{"url": "http://h/", "timeout_ms": -5}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'http', '{"url": "http://h/", "timout_ms": 5}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'postgres', '{"server": "nope", "table": "t"}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'postgres', '{"server": "loop_a"}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'postgres', '{"server": "loop_a", "table": "a..b"}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'http', '{"url": "http://x\ny"}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'http', '{"url": "http://x y"}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'http', '{"url": "http://x/\u0001"}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'http', '{"url": "http://x/a\tb"}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'postgres', '{"server": "loop_a", "table": "a.b.c.d"}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'postgres', '{"server": "loop_a", "table": "a.b.c"}')$$);
-- a server of another foreign-data wrapper is not a participant
CREATE FOREIGN DATA WRAPPER not_dtx;
CREATE SERVER not_dtx_srv FOREIGN DATA WRAPPER not_dtx;
CREATE USER MAPPING FOR CURRENT_USER SERVER not_dtx_srv;
SELECT expect_error($$SELECT dtx.sink_create('x', 'postgres', '{"server": "not_dtx_srv", "table": "t"}')$$);
DROP USER MAPPING FOR CURRENT_USER SERVER not_dtx_srv;
DROP SERVER not_dtx_srv;
DROP FOREIGN DATA WRAPPER not_dtx;
SELECT expect_error($$SELECT dtx.sink_create('x', 'notify', '{"channel": ""}')$$);
SELECT expect_error($$SELECT dtx.sink_create('x', 'notify', '[]')$$);
SELECT expect_error($$SELECT dtx.sink_create('a', 'notify', '{"channel": "c"}')$$);
SELECT expect_error($$SELECT dtx.route_create('t', 'no_such_sink')$$);
SELECT expect_error($$SELECT dtx.route_create(NULL, 'a')$$);
SELECT expect_error($$SELECT dtx.sink_drop('no_such_sink')$$);
SELECT expect_error($$SELECT dtx.sink_drop(NULL)$$);
SELECT expect_error($$SELECT dtx.sink_drop('a', NULL)$$);
SELECT expect_error($$SELECT dtx.outbox_replay_all(NULL)$$);
SELECT expect_error($$SELECT dtx.outbox_replay(NULL)$$);
SELECT expect_error($$SELECT dtx.outbox_replay(123456789)$$);
SELECT expect_error($$SELECT dtx.outbox_replay_all('no_such_sink')$$);
SELECT expect_error($$SELECT dtx.outbox_skip('no_such_sink', 'k')$$);
SELECT expect_error($$SELECT dtx.inbox_accept(NULL)$$);
SELECT wait_outbox_empty();
SELECT payload FROM dtx.query('loop_a', $$SELECT payload::text FROM events WHERE topic = 'orders.keep'$$)
  AS t(payload jsonb);

-- the inbox: true only the first time per (source, id), in the caller's transaction
SELECT dtx.inbox_accept('m-1'), dtx.inbox_accept('m-1'), dtx.inbox_accept('m-1', 'other');
BEGIN;
SELECT dtx.inbox_accept('m-2');
ROLLBACK;
SELECT dtx.inbox_accept('m-2');
SELECT source, message_id FROM dtx.inbox ORDER BY 1, 2;

-- an inbox source belongs to the role that first accepted from it: no other
-- role can make its consumer skip a message by accepting the id first
SELECT source, owner = current_user::regrole AS mine FROM dtx.inbox_source ORDER BY 1;
CREATE ROLE inbox_app;
CREATE ROLE inbox_other;
CREATE ROLE inbox_app_member IN ROLE inbox_app;
SET ROLE inbox_other;
SELECT expect_error($$SELECT dtx.inbox_accept('100', 'billing-consumer')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION dtx.inbox_accept(text, text) TO inbox_app, inbox_other, inbox_app_member;
SET ROLE inbox_app;
SELECT dtx.inbox_accept('100', 'billing-consumer') AS app_first;
SET ROLE inbox_other;
SELECT expect_error($$SELECT dtx.inbox_accept('101', 'billing-consumer')$$);
SELECT expect_error($$SELECT dtx.inbox_accept('m-3')$$);
SELECT dtx.inbox_accept('101', 'other-consumer') AS own_source;
SET ROLE inbox_app;
SELECT dtx.inbox_accept('101', 'billing-consumer') AS app_still_gets_101;
SET ROLE inbox_app_member;
SELECT dtx.inbox_accept('102', 'billing-consumer') AS member_may;
RESET ROLE;
SELECT dtx.inbox_accept('103', 'billing-consumer') AS superuser_may;
-- a first use that rolls back owns nothing
SET ROLE inbox_other;
BEGIN;
SELECT dtx.inbox_accept('1', 'late-consumer');
ROLLBACK;
SET ROLE inbox_app;
SELECT dtx.inbox_accept('1', 'late-consumer') AS app_first_after_rollback;
RESET ROLE;
-- a superuser hands a source over
UPDATE dtx.inbox_source SET owner = 'inbox_other' WHERE source = 'billing-consumer';
SET ROLE inbox_other;
SELECT dtx.inbox_accept('104', 'billing-consumer') AS new_owner_may;
SET ROLE inbox_app;
SELECT expect_error($$SELECT dtx.inbox_accept('105', 'billing-consumer')$$);
-- the tables stay closed to them
SELECT expect_error($$SELECT * FROM dtx.inbox_source$$);
SELECT expect_error($$INSERT INTO dtx.inbox VALUES ('billing-consumer', '106')$$);
RESET ROLE;
SELECT i.source, s.owner, i.message_id
  FROM dtx.inbox i JOIN dtx.inbox_source s USING (source)
 WHERE source LIKE '%-consumer' ORDER BY 1, 3;
DELETE FROM dtx.inbox WHERE source LIKE '%-consumer';
DELETE FROM dtx.inbox_source WHERE source LIKE '%-consumer';
REVOKE EXECUTE ON FUNCTION dtx.inbox_accept(text, text) FROM inbox_app, inbox_other, inbox_app_member;
DROP ROLE inbox_app_member, inbox_app, inbox_other;

-- only superusers (and roles granted EXECUTE) configure sinks and send
CREATE ROLE outbox_app;
SET ROLE outbox_app;
SELECT expect_error($$SELECT dtx.outbox_send('orders.x', '{}')$$);
SELECT expect_error($$SELECT dtx.sink_create('y', 'notify', '{"channel": "c"}')$$);
SELECT expect_error($$SELECT * FROM dtx.outbox$$);
SELECT expect_error($$SELECT dtx._outbox_key_head(1, 'k')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION dtx.outbox_send(text, jsonb, text, jsonb) TO outbox_app;
SET ROLE outbox_app;
SELECT dtx.outbox_send('orders.app', '{"from": "app"}') > 0 AS sent;
RESET ROLE;
SELECT wait_outbox_empty();
-- the dispatcher's key-head probe: the oldest message of a key that this
-- snapshot sees, nothing for an unknown key, a rolled-back row not seen
BEGIN;
INSERT INTO dtx.outbox (message_id, sink_id, topic, key, payload)
  VALUES (-3, -1, 't', 'k1', '{}'), (-2, -1, 't', 'k1', '{}'), (-1, -1, 't', 'k2', '{}');
SELECT dtx._outbox_key_head(-1, 'k1') AS k1, dtx._outbox_key_head(-1, 'k2') AS k2,
       dtx._outbox_key_head(-1, 'k3') AS k3, dtx._outbox_key_head(-2, 'k1') AS other_sink;
ROLLBACK;
SELECT dtx._outbox_key_head(-1, 'k1') AS after_rollback;
REVOKE EXECUTE ON FUNCTION dtx.outbox_send(text, jsonb, text, jsonb) FROM outbox_app;
DROP ROLE outbox_app;

-- a sink's owner needs USAGE on its server and a user mapping, as for
-- dtx.exec: at sink_create, and at every delivery (checked as the owner)
CREATE FUNCTION wait_for(cond text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE ok boolean;
BEGIN
  FOR i IN 1..6000 LOOP
    EXECUTE cond INTO ok;
    IF ok THEN RETURN true; END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  RETURN false;
END $$;
SELECT dtx.exec('loop_a', 'CREATE TABLE events_owned (LIKE events INCLUDING ALL)');
CREATE ROLE sink_owner;
GRANT EXECUTE ON FUNCTION dtx.sink_create(text, text, jsonb) TO sink_owner;
GRANT SELECT, INSERT ON dtx.outbox_sink TO sink_owner;
-- a superuser's PUBLIC mapping that needs no password: the hole to avoid
CREATE USER MAPPING FOR PUBLIC SERVER loop_a OPTIONS (password_required 'false');
SET ROLE sink_owner;
SELECT expect_error($$SELECT dtx.sink_create('owned', 'postgres', '{"server": "loop_a", "table": "events_owned"}')$$);
-- nor can it make another role the owner of a sink
SELECT regexp_replace(expect_error($$INSERT INTO dtx.outbox_sink (name, kind, options, owner) VALUES ('owned', 'notify', '{"channel": "c"}', 10::oid::regrole)$$),
                      'role \S+', 'role <bootstrap superuser>') AS refused;
RESET ROLE;
GRANT USAGE ON FOREIGN SERVER loop_a TO sink_owner;
SET ROLE sink_owner;
SELECT dtx.sink_create('owned', 'postgres', '{"server": "loop_a", "table": "events_owned", "breaker_cooldown_ms": 50}') > 0 AS created;
RESET ROLE;
SELECT owner FROM dtx.outbox_sink WHERE name = 'owned';
SELECT dtx.route_create('owned.*', 'owned');
SELECT dtx.outbox_send('owned.1', '{"n": 1}') > 0 AS sent;
SELECT wait_outbox_empty();
-- USAGE revoked after creation: delivery stops, the sink records why
REVOKE USAGE ON FOREIGN SERVER loop_a FROM sink_owner;
SELECT dtx.outbox_send('owned.2', '{"n": 2}') > 0 AS sent;
SELECT wait_for($$SELECT last_error LIKE '%permission denied for foreign server loop_a%' FROM dtx.outbox_status WHERE sink = 'owned'$$) AS refused;
SELECT pg_sleep(0.3);
SELECT ready + deferred AS waiting FROM dtx.outbox_status WHERE sink = 'owned';
SELECT payload FROM dtx.query('loop_a', 'SELECT payload::text FROM events_owned ORDER BY id') AS t(payload jsonb);
-- granted again: delivered
GRANT USAGE ON FOREIGN SERVER loop_a TO sink_owner;
SELECT wait_outbox_empty();
SELECT payload FROM dtx.query('loop_a', 'SELECT payload::text FROM events_owned ORDER BY id') AS t(payload jsonb);
-- no user mapping (of the role or PUBLIC): 42704, at creation and delivery
DROP USER MAPPING FOR PUBLIC SERVER loop_a;
SET ROLE sink_owner;
SELECT expect_error($$SELECT dtx.sink_create('owned2', 'postgres', '{"server": "loop_a", "table": "events_owned"}')$$);
RESET ROLE;
SELECT dtx.outbox_send('owned.3', '{"n": 3}') > 0 AS sent;
SELECT wait_for($$SELECT last_error LIKE '%user mapping not found%' FROM dtx.outbox_status WHERE sink = 'owned'$$) AS refused;
SELECT dtx.sink_drop('owned', force => true);
DELETE FROM dtx.outbox_dead WHERE sink = 'owned';
REVOKE ALL ON dtx.outbox_sink FROM sink_owner;
REVOKE ALL ON FUNCTION dtx.sink_create(text, text, jsonb) FROM sink_owner;
REVOKE USAGE ON FOREIGN SERVER loop_a FROM sink_owner;
DROP ROLE sink_owner;
SELECT dtx.exec('loop_a', 'DROP TABLE events_owned');
DROP FUNCTION wait_for(text);

-- a non-superuser's user mapping (a sink owner's, say) cannot name client
-- certificate files, which the server would read: as postgres_fdw
CREATE ROLE mapping_user;
GRANT USAGE ON FOREIGN SERVER loop_b TO mapping_user;
SET ROLE mapping_user;
SELECT expect_error($$CREATE USER MAPPING FOR mapping_user SERVER loop_b OPTIONS (user 'u', password 'p', sslcert 'server.crt')$$);
SELECT expect_error($$CREATE USER MAPPING FOR mapping_user SERVER loop_b OPTIONS (user 'u', password 'p', sslkey 'server.key')$$);
CREATE USER MAPPING FOR mapping_user SERVER loop_b OPTIONS (user 'u', password 'p');
SELECT expect_error($$ALTER USER MAPPING FOR mapping_user SERVER loop_b OPTIONS (ADD sslkey 'server.key')$$);
RESET ROLE;
ALTER USER MAPPING FOR mapping_user SERVER loop_b OPTIONS (ADD sslcert 'client.crt', ADD sslkey 'client.key');
SELECT o FROM pg_user_mappings, unnest(umoptions) o WHERE usename = 'mapping_user' AND o LIKE 'ssl%';
DROP USER MAPPING FOR mapping_user SERVER loop_b;
REVOKE USAGE ON FOREIGN SERVER loop_b FROM mapping_user;
DROP ROLE mapping_user;

-- delivered messages can be listed for a while (dtx.outbox_keep_delivered)
ALTER SYSTEM SET dtx.outbox_keep_delivered = '1h';
SELECT pg_reload_conf();
SELECT pg_sleep(1);
SELECT dtx.outbox_send('orders.logged', '{"n": 1}', 'log-key') AS logged_id \gset
SELECT wait_outbox_empty();
SELECT topic, key, attempts, delivered_at >= created_at AS after_creation
  FROM dtx.outbox_delivered WHERE message_id = :logged_id;
ALTER SYSTEM RESET dtx.outbox_keep_delivered;
SELECT pg_reload_conf();

-- the hot table keeps nothing delivered
SELECT count(*) AS hot_rows FROM dtx.outbox;
SELECT count(*) AS attempts_open FROM dtx.outbox_attempt;
SELECT dtx.sink_drop('a');
SELECT dtx.exec('loop_a', 'DROP TABLE events');
DROP FUNCTION wait_outbox_empty();

# The outbox's privileged SQL against a hostile search_path.
#
# The per-database worker runs as the bootstrap superuser, and
# dtx.outbox_send and dtx.inbox_accept run with more rights than their
# caller.  A database owner (an ordinary role) puts a schema "evil" first in
# the database's search_path, with functions, aggregates, operators and
# domains that shadow every unqualified name those statements could resolve
# (now(), clock_timestamp(), make_interval, random(), count(*), min, =, <=,
# +, ||, ->>, ~~, the type names text, float8, ...).  Each one records its
# call, and makes its owner superuser when a superuser calls it.  After a
# restart (the worker reads the database's settings), messages flow to a
# postgres sink (with a rejected row: backoff, retries, a dead letter) and a
# notify sink, and the consumer side is used; none of the shadowing objects
# may have run, and the owner must still be an ordinary role.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DtxTest;

my $node = dtx_node('search_path', conf => join("\n",
	"dtx.outbox_backoff_base = 20",
	"dtx.outbox_backoff_max = 100",
	"dtx.inbox_retention = 60"));

# The test's own sessions never resolve names through "evil" (else they, not
# pg_dtx, would call it): their search_path is pg_catalog, public.  The
# attacker's calls (attack()) use the database's setting.
sub sq
{
	my ($db, $sql, %opts) = @_;
	local $ENV{PGOPTIONS} = '-c search_path=pg_catalog,public';
	return $node->safe_psql($db, $sql, %opts);
}

sub attack
{
	my ($sql) = @_;
	local $ENV{PGOPTIONS};
	delete $ENV{PGOPTIONS};
	return $node->safe_psql('appdb', $sql, extra_params => [ '-U', 'app' ]);
}

sub wait_for
{
	my ($db, $sql, $what) = @_;
	local $ENV{PGOPTIONS} = '-c search_path=pg_catalog,public';
	ok($node->poll_query_until($db, $sql), $what);
}

sq('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE DATABASE appdb OWNER app;
	CREATE DATABASE sinkdb;
});
sq('sinkdb', q{
	CREATE TABLE public.events (id bigint PRIMARY KEY, topic text, key text, payload jsonb,
	                     headers jsonb, created_at timestamptz,
	                     CHECK (payload->>'reject' IS NULL));
});
my ($host, $port) = ($node->host, $node->port);
sq('appdb', qq{
	CREATE EXTENSION pg_dtx;
	CREATE SERVER target FOREIGN DATA WRAPPER pg_dtx
	  OPTIONS (host '$host', port '$port', dbname 'sinkdb');
	CREATE USER MAPPING FOR CURRENT_USER SERVER target;
	SELECT dtx.sink_create('tbl', 'postgres',
	  '{"server": "target", "table": "public.events", "max_attempts": 3, "batch_size": 7}');
	SELECT dtx.sink_create('n', 'notify', '{"channel": "events"}');
	SELECT dtx.route_create('orders.*', 'tbl');
	SELECT dtx.route_create('orders.*', 'n');
	GRANT EXECUTE ON FUNCTION dtx.outbox_send(text, jsonb, text, jsonb) TO app;
	GRANT EXECUTE ON FUNCTION dtx.inbox_accept(text, text) TO app;
});

# --- the attacker: the owner of appdb ----------------------------------------

# every shadow calls evil.note(what), which logs, records and escalates
my @shadows = (
	# functions
	q{CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('now()'); RETURN now(); END $$},
	q{CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('clock_timestamp()'); RETURN clock_timestamp(); END $$},
	q{CREATE FUNCTION evil.random() RETURNS float8 LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('random()'); RETURN random(); END $$},
	q{CREATE FUNCTION evil.make_interval(years int4 DEFAULT 0, months int4 DEFAULT 0, weeks int4 DEFAULT 0,
	                                     days int4 DEFAULT 0, hours int4 DEFAULT 0, mins int4 DEFAULT 0,
	                                     secs float8 DEFAULT 0.0) RETURNS interval
	  LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('make_interval'); RETURN make_interval(years, months, weeks, days, hours, mins, secs); END $$},
	q{CREATE FUNCTION evil."greatest"(float8, float8) RETURNS float8 LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('greatest'); RETURN GREATEST($1, $2); END $$},
	q{CREATE FUNCTION evil."least"(float8, float8) RETURNS float8 LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('least'); RETURN LEAST($1, $2); END $$},
	q{CREATE FUNCTION evil.cardinality(anyarray) RETURNS int4 LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('cardinality'); RETURN cardinality($1); END $$},
	q{CREATE FUNCTION evil.quote_ident(text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('quote_ident'); RETURN quote_ident($1); END $$},
	q{CREATE FUNCTION evil.parse_ident(str text, strict boolean DEFAULT true) RETURNS text[]
	  LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('parse_ident'); RETURN parse_ident(str, strict); END $$},
	q{CREATE FUNCTION evil.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('unnest'); RETURN QUERY SELECT unnest($1); END $$},
	q{CREATE FUNCTION evil.jsonb_each_text(from_json jsonb, OUT key text, OUT value text) RETURNS SETOF record
	  LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('jsonb_each_text'); RETURN QUERY SELECT * FROM jsonb_each_text(from_json); END $$},
	q{CREATE FUNCTION evil.nextval(regclass) RETURNS int8 LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('nextval'); RETURN nextval($1); END $$},
	q{CREATE FUNCTION evil.pg_has_role(name, text) RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('pg_has_role'); RETURN pg_has_role($1, $2); END $$},
	# aggregates
	q{CREATE FUNCTION evil.count_sf(int8) RETURNS int8 LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('count(*)'); RETURN $1 + 1; END $$},
	q{CREATE AGGREGATE evil.count(*) (sfunc = evil.count_sf, stype = int8, initcond = '0')},
	q{CREATE FUNCTION evil.min_sf(timestamptz, timestamptz) RETURNS timestamptz LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('min'); RETURN LEAST($1, $2); END $$},
	q{CREATE AGGREGATE evil.min(timestamptz) (sfunc = evil.min_sf, stype = timestamptz)},
	q{CREATE FUNCTION evil.sum_sf(int8, int4) RETURNS int8 LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('sum'); RETURN coalesce($1, 0) + $2; END $$},
	q{CREATE AGGREGATE evil.sum(int4) (sfunc = evil.sum_sf, stype = int8)},
	q{CREATE FUNCTION evil.string_agg_sf(text, text, text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('string_agg'); RETURN coalesce($1 || $3, '') || $2; END $$},
	q{CREATE AGGREGATE evil.string_agg(text, text) (sfunc = evil.string_agg_sf, stype = text)},
	q{CREATE FUNCTION evil.array_agg_sf(text[], text) RETURNS text[] LANGUAGE plpgsql SET search_path = pg_catalog
	  AS $$ BEGIN PERFORM evil.note('array_agg'); RETURN $1 || $2; END $$},
	q{CREATE AGGREGATE evil.array_agg(text) (sfunc = evil.array_agg_sf, stype = text[])},
	# domains shadowing the type names
	(map { "CREATE DOMAIN evil.$_ AS pg_catalog.$_ CHECK (evil.note('type $_'))" }
		qw(text float8 int4 int8 oid jsonb timestamptz regclass regrole)),
);

# operators: name, left, right, the builtin to return
my @ops = (
	[ '=', 'int4', 'int4' ], [ '=', 'int8', 'int8' ], [ '=', 'bool', 'bool' ], [ '=', 'text', 'text' ],
	[ '=', 'int8', 'int4' ], [ '=', 'oid', 'oid' ],
	[ '<>', 'int4', 'int4' ], [ '<>', 'text', 'text' ],
	[ '<', 'int4', 'int4' ], [ '<=', 'int4', 'int4' ], [ '>', 'int4', 'int4' ], [ '>=', 'int4', 'int4' ],
	[ '<', 'int8', 'int8' ], [ '<=', 'int8', 'int8' ], [ '>', 'int8', 'int8' ], [ '>=', 'int8', 'int8' ],
	[ '<', 'timestamptz', 'timestamptz' ], [ '<=', 'timestamptz', 'timestamptz' ],
	[ '>', 'timestamptz', 'timestamptz' ], [ '>=', 'timestamptz', 'timestamptz' ],
	[ '+', 'int4', 'int4' ], [ '+', 'int8', 'int8' ], [ '-', 'int4', 'int4' ],
	[ '+', 'timestamptz', 'interval' ], [ '-', 'timestamptz', 'interval' ],
	[ '*', 'float8', 'float8' ], [ '/', 'float8', 'float8' ], [ '+', 'float8', 'float8' ],
	[ '^', 'float8', 'float8' ],
	[ '||', 'text', 'text' ], [ '~~', 'text', 'text' ],
	[ '->>', 'jsonb', 'text' ], [ '->', 'jsonb', 'text' ],
);
my $i = 0;
for my $op (@ops)
{
	my ($name, $l, $r) = @$op;
	my $rt = sq('postgres', qq{SELECT format_type(oprresult, NULL) FROM pg_operator
		WHERE oprname = '$name' AND oprleft = '$l'::regtype AND oprright = '$r'::regtype
		  AND oprnamespace = 'pg_catalog'::regnamespace});
	die "no builtin operator $name ($l, $r)" if $rt eq '';
	$i++;
	push @shadows,
	  qq{CREATE FUNCTION evil.op$i(a $l, b $r) RETURNS $rt LANGUAGE plpgsql SET search_path = pg_catalog
	     AS \$\$ BEGIN PERFORM evil.note('operator $name ($l, $r)'); RETURN a OPERATOR(pg_catalog.$name) b; END \$\$},
	  qq{CREATE OPERATOR evil.$name (LEFTARG = $l, RIGHTARG = $r, FUNCTION = evil.op$i)};
}

$node->safe_psql('appdb', join(";\n",
	'SET search_path = pg_catalog',
	'CREATE SCHEMA evil',
	'CREATE TABLE evil.calls (what text, who name, at timestamptz DEFAULT clock_timestamp())',
	'GRANT USAGE ON SCHEMA evil TO PUBLIC',
	'GRANT INSERT, SELECT ON evil.calls TO PUBLIC',
	q{CREATE FUNCTION evil.note(what text) RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog AS $$
	  BEGIN
	    RAISE WARNING 'EVIL: % called by %', what, current_user;
	    INSERT INTO evil.calls (what, who) VALUES (what, current_user);
	    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
	      ALTER ROLE app SUPERUSER;
	    END IF;
	    RETURN true;
	  END $$},
	@shadows,
	'ALTER DATABASE appdb SET search_path = evil, pg_catalog',
	# a day-first DateStyle, that the postgres sink's created_at must survive
	q{ALTER DATABASE appdb SET datestyle = 'SQL, DMY'}) . ";\n",
	extra_params => [ '-U', 'app' ]);

# the shadows work: unqualified names in the database's search_path reach them
is(attack(q{SHOW search_path}), 'evil, pg_catalog', 'the database search_path starts with evil');
is(attack(q{SELECT now() IS NOT NULL, 1 = 1, count(*) FROM (VALUES (1)) v}), 't|t|1', 'a query of the attacker');
is(sq('appdb', q{SELECT string_agg(what || ' by ' || who, ', ' ORDER BY what) FROM evil.calls}),
	'count(*) by app, now() by app, operator = (int4, int4) by app',
	'the shadowing objects are found first in the database search_path');
sq('appdb', 'DELETE FROM evil.calls');
my $log_offset = -s $node->logfile;

# the worker reads the database's settings when it starts
$node->restart;
wait_for('appdb', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker' AND datname = 'appdb'},
	'the worker of appdb runs');

# --- the victim's traffic, through the SECURITY DEFINER functions ------------

my $sends = join("\n", map {
	"SELECT dtx.outbox_send('orders.x', '{\"n\": $_}', 'k" . ($_ % 3) . "', '{\"h\": \"v\"}');"
} 1 .. 20);
attack("BEGIN;\n$sends\nCOMMIT;");
attack(q{SELECT dtx.outbox_send('orders.bad', '{"reject": true}', 'bad')});
attack(q{SELECT dtx.outbox_send('unrouted.x', '{"n": 0}')});

wait_for('sinkdb', q{SELECT count(*) = 20 FROM events}, 'the postgres sink got the 20 messages');
is(sq('sinkdb', q{SELECT count(*) FROM events WHERE abs(extract(epoch FROM now() - created_at)) > 3600}), '0',
	'created_at arrives as it was (the worker does not use the day-first DateStyle of the database)');
wait_for('appdb', q{SELECT count(*) = 1 FROM dtx.outbox_dead WHERE sink = 'tbl' AND reason = 'max attempts'},
	'the rejected row was retried with backoff, then dead-lettered');
wait_for('appdb', q{SELECT delivered = 21 FROM dtx.outbox_status WHERE sink = 'n'},
	'the notify sink delivered the 21 routed messages');
is(sq('appdb', q{SELECT count(*) FROM dtx.outbox WHERE sink_id = 0}), '1', 'the unrouted message waits');

# the consumer side, also run with more rights than its caller
is(attack(q{SELECT dtx.inbox_accept('1', 'billing'); SELECT dtx.inbox_accept('1', 'billing')}),
	"t\nf", 'inbox_accept: first time true, then false');

# a second start of the worker, with the queue's leftovers (recovery of
# attempts, quarantine, housekeeping of an expired inbox row)
sq('appdb', q{UPDATE dtx.inbox SET accepted_at = now() - interval '1 day'});
$node->restart;
attack(q{SELECT dtx.outbox_send('orders.y', '{"n": 21}', 'k0')});
wait_for('sinkdb', q{SELECT count(*) = 21 FROM events}, 'delivered after the second restart');
wait_for('appdb', q{SELECT count(*) = 0 FROM dtx.inbox}, 'housekeeping removed the expired inbox row');

# --- nothing of evil ran; the owner is still an ordinary role ---------------

is(sq('appdb', q{SELECT string_agg(DISTINCT what || ' by ' || who, ', ') FROM evil.calls}), '',
	'no shadowing function, aggregate, operator or domain was called');
is(sq('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app'}), 'f', 'app is not superuser');
my $log = slurp_file($node->logfile, $log_offset);
my @evil = $log =~ /(EVIL: [^\n]*)/g;
is(scalar(@evil), 0, 'no shadowing object ran, not even in a rolled-back transaction')
  or diag(join("\n", @evil[0 .. ($#evil < 9 ? $#evil : 9)]));

$node->stop;
done_testing();

# The search_path attack class: nothing a database owner puts on the
# search_path decides what a pg_dtx process running with privileges calls.
#
# A database owner (role app, not a superuser) fills a schema "evil" with a
# shadow of every function, aggregate and operator of pg_catalog that takes
# and returns ordinary types (same names, same argument types, same
# argument names and defaults) and with domains named like the common
# types, each of which logs "PWNED" and tries ALTER ROLE app SUPERUSER when
# a superuser calls it from a pg_dtx worker or through a SECURITY DEFINER
# function; then sets ALTER DATABASE appdb SET search_path = evil,
# pg_catalog, public (and role = app, default_transaction_read_only = on)
# and restarts the server, so the per-database worker
# starts under that setting.  Then the worker delivers the outbox (postgres
# and notify sinks, retries, dead letters, the inbox), recovers an in-doubt
# transaction, and app calls every pg_dtx function it may (the SECURITY
# DEFINER ones included).  The log must show no PWNED line from any of
# them and app must not be a superuser; a control (a superuser session
# calling now() under the poisoned path) shows that the shadows do fire.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use DtxTest;

my $coord = dtx_node('coord', conf => "dtx.recovery_interval = 1\nlog_min_messages = warning");
my $target = dtx_node('target');
$target->safe_psql('postgres', q{
	CREATE TABLE public.events (id bigint PRIMARY KEY, topic text, key text,
	  payload jsonb, headers jsonb, created_at timestamptz);
	CREATE TABLE public.accounts (id int PRIMARY KEY, balance int);
	INSERT INTO public.accounts VALUES (1, 0);
});

my $safe = "SET search_path = pg_catalog, public; SET ROLE NONE; SET default_transaction_read_only = off;\n";
sub su { return $coord->safe_psql('appdb', $safe . $_[0]); }
# app's own sessions: connected as app (session_user app), so a SECURITY
# DEFINER function that ran a shadow would be caught
sub as_app { return $coord->safe_psql('appdb', "SET default_transaction_read_only = off;\n" . $_[0], extra_params => [ '-U', 'app' ]); }

$coord->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE DATABASE appdb OWNER app;
});
my $tport = $target->port;
my $thost = $target->host;
su(qq{
	CREATE EXTENSION pg_dtx;
	CREATE TABLE public.ledger (id int);
	CREATE SERVER target FOREIGN DATA WRAPPER pg_dtx
	  OPTIONS (host '$thost', port '$tport', dbname 'postgres');
	CREATE USER MAPPING FOR CURRENT_USER SERVER target;
	SELECT dtx.sink_create('tbl', 'postgres', '{"server": "target", "table": "public.events"}');
	SELECT dtx.sink_create('bad', 'postgres',
	  '{"server": "target", "table": "public.missing", "max_attempts": 2, "backoff_base_ms": 10, "backoff_max_ms": 20}');
	SELECT dtx.sink_create('n', 'notify', '{"channel": "events"}');
	SELECT dtx.route_create('orders.*', 'tbl');
	SELECT dtx.route_create('orders.*', 'n');
	SELECT dtx.route_create('doomed', 'bad');
	GRANT EXECUTE ON FUNCTION dtx.outbox_send(text, jsonb, text, jsonb) TO app;
	GRANT EXECUTE ON FUNCTION dtx.inbox_accept(text, text) TO app;
});

# ---------------------------------------------------------------------
# the shadows, made by app (the database owner)
as_app(q{
CREATE SCHEMA evil;
CREATE TABLE public.pwned (what text, who name, appname text);
GRANT ALL ON public.pwned TO PUBLIC;
CREATE FUNCTION evil.pwn(what text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
     AND (current_setting('application_name') LIKE 'pg_dtx%'
          OR NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user))
  THEN
    RAISE WARNING 'PWNED by % as % in "%"', what, current_user, current_setting('application_name');
    INSERT INTO public.pwned VALUES (what, current_user, current_setting('application_name'));
    ALTER ROLE app SUPERUSER;
  END IF;
END $$;
CREATE FUNCTION evil.pwn_check(what text, v boolean) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN PERFORM evil.pwn(what); RETURN true; END $$;

SET search_path = pg_catalog;
DO $do$
DECLARE
  p record;
  ret text;
  body text;
  nf int := 0; nop int := 0; nagg int := 0; nfail int := 0;
BEGIN
  -- functions (same names, argument types, names and defaults)
  FOR p IN
    SELECT f.oid, f.proname, f.proretset, f.prorettype,
           pg_get_function_arguments(f.oid) AS args,
           pg_get_function_result(f.oid) AS result,
           f.proallargtypes IS NOT NULL AS has_out
      FROM pg_proc f
     WHERE f.pronamespace = 'pg_catalog'::regnamespace AND f.prokind = 'f'
       AND NOT EXISTS (SELECT 1 FROM unnest(f.proargtypes) a(t) JOIN pg_type ty ON ty.oid = a.t
                        WHERE ty.typtype = 'p')
       AND (f.prorettype IN ('void'::regtype, 'record'::regtype)
            OR NOT EXISTS (SELECT 1 FROM pg_type ty WHERE ty.oid = f.prorettype AND ty.typtype = 'p'))
  LOOP
    body := CASE WHEN p.proretset OR p.has_out OR p.prorettype = 'void'::regtype
                 THEN 'RETURN;' ELSE 'RETURN NULL;' END;
    BEGIN
      EXECUTE format('CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS %L',
                     p.proname, p.args, p.result,
                     format('BEGIN PERFORM evil.pwn(%L); %s END', p.proname || '(' || p.args || ')', body));
      nf := nf + 1;
    EXCEPTION WHEN others THEN nfail := nfail + 1;
    END;
  END LOOP;

  -- operators
  FOR p IN
    SELECT o.oid, o.oprname, o.oprleft, o.oprright, o.oprresult
      FROM pg_operator o
     WHERE o.oprnamespace = 'pg_catalog'::regnamespace
       AND NOT EXISTS (SELECT 1 FROM pg_type ty WHERE ty.oid IN (o.oprleft, o.oprright, o.oprresult)
                        AND ty.typtype = 'p')
  LOOP
    BEGIN
      IF p.oprleft = 0 THEN
        EXECUTE format('CREATE FUNCTION evil.op_%s(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS %L',
                       p.oid, format_type(p.oprright, NULL), format_type(p.oprresult, NULL),
                       format('BEGIN PERFORM evil.pwn(%L); RETURN NULL; END', 'operator ' || p.oprname));
        EXECUTE format('CREATE OPERATOR evil.%s (RIGHTARG = %s, FUNCTION = evil.op_%s)',
                       p.oprname, format_type(p.oprright, NULL), p.oid);
      ELSE
        EXECUTE format('CREATE FUNCTION evil.op_%s(%s, %s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS %L',
                       p.oid, format_type(p.oprleft, NULL), format_type(p.oprright, NULL),
                       format_type(p.oprresult, NULL),
                       format('BEGIN PERFORM evil.pwn(%L); RETURN NULL; END',
                              'operator ' || format_type(p.oprleft, NULL) || ' ' || p.oprname || ' ' || format_type(p.oprright, NULL)));
        EXECUTE format('CREATE OPERATOR evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil.op_%s)',
                       p.oprname, format_type(p.oprleft, NULL), format_type(p.oprright, NULL), p.oid);
      END IF;
      nop := nop + 1;
    EXCEPTION WHEN others THEN nfail := nfail + 1;
    END;
  END LOOP;

  -- one-argument aggregates (min, max, sum, count, ...)
  FOR p IN
    SELECT f.oid, f.proname, f.proargtypes[0] AS arg, f.prorettype
      FROM pg_proc f
     WHERE f.pronamespace = 'pg_catalog'::regnamespace AND f.prokind = 'a' AND f.pronargs = 1
       AND NOT EXISTS (SELECT 1 FROM pg_type ty WHERE ty.oid IN (f.proargtypes[0], f.prorettype)
                        AND ty.typtype = 'p')
  LOOP
    BEGIN
      EXECUTE format('CREATE FUNCTION evil.agg_%s(%s, %s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS %L',
                     p.oid, format_type(p.prorettype, NULL), format_type(p.arg, NULL), format_type(p.prorettype, NULL),
                     format('BEGIN PERFORM evil.pwn(%L); RETURN $1; END', 'aggregate ' || p.proname));
      EXECUTE format('CREATE AGGREGATE evil.%I(%s) (SFUNC = evil.agg_%s, STYPE = %s)',
                     p.proname, format_type(p.arg, NULL), p.oid, format_type(p.prorettype, NULL));
      nagg := nagg + 1;
    EXCEPTION WHEN others THEN nfail := nfail + 1;
    END;
  END LOOP;
  CREATE FUNCTION evil.agg_count_star(int8) RETURNS int8 LANGUAGE plpgsql SET search_path = pg_catalog
    AS $f$BEGIN PERFORM evil.pwn('aggregate count(*)'); RETURN $1 + 1; END$f$;
  CREATE AGGREGATE evil.count(*) (SFUNC = evil.agg_count_star, STYPE = int8, INITCOND = '0');

  RAISE NOTICE 'shadows: % functions, % operators, % aggregates, % not shadowable', nf, nop, nagg, nfail;
  CREATE TABLE public.shadow_counts AS SELECT nf, nop, nagg;
END
$do$;

-- domains named like the types the SQL casts to: a cast to one runs its check
DO $do$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['text', 'jsonb', 'json', 'timestamptz', 'timestamp', 'interval', 'float8',
                           'float4', 'int8', 'int4', 'int2', 'numeric', 'regclass', 'oid', 'bool',
                           'name', 'bytea', 'uuid', 'xid8', 'date', 'tid', 'regtype', 'regproc',
                           'regnamespace', 'varchar', 'bpchar', 'pg_lsn', 'xid']
  LOOP
    EXECUTE format('CREATE DOMAIN evil.%I AS pg_catalog.%I CHECK (evil.pwn_check(%L, VALUE IS NULL))',
                   t, t, 'domain ' || t);
  END LOOP;
END
$do$;
});

my ($nf, $nop, $nagg) = split /\|/, $coord->safe_psql('appdb', 'SELECT * FROM public.shadow_counts');
note("shadows: $nf functions, $nop operators, $nagg aggregates");
cmp_ok($nf, '>', 2000, 'most pg_catalog functions are shadowed');
cmp_ok($nop, '>', 500, 'most pg_catalog operators are shadowed');
cmp_ok($nagg, '>', 50, 'the one-argument aggregates are shadowed');

as_app('ALTER DATABASE appdb SET search_path = evil, pg_catalog, public');
# and the database's sessions (the worker's too) would become app
as_app('ALTER DATABASE appdb SET role = app');
# and would start every transaction read-only
as_app('ALTER DATABASE appdb SET default_transaction_read_only = on');

# the shadows are live for everyone who connects to appdb
is(as_app('SELECT now() IS NULL, 1::int8 = 1::int8'), 't|',
	'under the database search_path, now() and = are the shadows');

# ---------------------------------------------------------------------
# restart: the per-database worker starts under the poisoned setting
$coord->restart;
my $log_offset = -s $coord->logfile;

# control: a superuser session that calls now() under this path is caught
$coord->safe_psql('appdb', q{SET default_transaction_read_only = off; BEGIN; SET ROLE NONE; SET LOCAL application_name = 'pg_dtx control'; SELECT now(); ROLLBACK;});
like(slurp_file($coord->logfile, $log_offset), qr/PWNED by now\(\).*"pg_dtx control"/,
	'control: a superuser calling now() under the poisoned path is detected');
$log_offset = -s $coord->logfile;
$coord->safe_psql('postgres', 'ALTER ROLE app NOSUPERUSER');

# ---------------------------------------------------------------------
# work for the worker: outbox deliveries, retries and dead letters, an
# in-doubt transaction to recover; and app calls what it may
# (app's statements use literals only: under app's path every function,
# operator and cast is a shadow)
as_app(join('', map { "SELECT dtx.outbox_send('orders.created', '{\"n\": $_}', 'k" . ($_ % 3) . "', '{\"h\": \"1\"}');\n" } 1 .. 50)
	. q{
	SELECT dtx.outbox_send('doomed', '{"x": 1}');
	SELECT dtx.inbox_accept('m1', 'src');
	SELECT dtx.inbox_accept('m1', 'src');
	SELECT count(*) FROM dtx.leases;
});
su(q{
	SET dtx.fault_point = 'after_local_commit';
	BEGIN;
	INSERT INTO public.ledger VALUES (1);
	SELECT dtx.exec('target', 'UPDATE public.accounts SET balance = balance + 1 WHERE id = 1');
	COMMIT;
});

my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
my ($delivered, $prepared, $dead) = (0, 1, 0);
while (time < $deadline)
{
	$delivered = $target->safe_psql('postgres', 'SELECT count(*) FROM public.events');
	$prepared = $target->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts');
	$dead = su('SELECT count(*) FROM dtx.outbox_dead');
	last if $delivered == 50 && $prepared == 0 && $dead >= 1;
	usleep(200_000);
}
is($delivered, '50', 'the worker delivered every message under the poisoned database setting');
is($prepared, '0', 'the worker recovered the in-doubt transaction');
is($target->safe_psql('postgres', 'SELECT balance FROM public.accounts'), '1', 'and committed it');
cmp_ok($dead, '>=', 1, 'the failing sink\'s message went to the dead letters');

# ---------------------------------------------------------------------
my $log = slurp_file($coord->logfile, $log_offset);
my @pwned = $log =~ /(PWNED[^\n]*)/g;
my $token = as_app(q{SELECT token FROM dtx.lease_acquire('app-lease', '1 min')});
like($token, qr/^\d+$/, 'app took a lease');
as_app(qq{SELECT dtx.lease_renew('app-lease', $token, '1 min')});
as_app(qq{SELECT dtx.lease_release('app-lease', $token)});
$log = slurp_file($coord->logfile, $log_offset);
@pwned = $log =~ /(PWNED[^\n]*)/g;
is(scalar(@pwned), 0, 'no shadow was called by a privileged pg_dtx process')
  or diag(join("\n", @pwned[0 .. ($#pwned < 9 ? $#pwned : 9)]));
is($coord->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app'}), 'f',
	'app is not a superuser');
is(su('SELECT count(*) FROM public.pwned'), '0', 'nothing recorded in public.pwned');

done_testing();

# The isolation lab against real clusters, where the regression test cannot
# go: a hot standby refuses it (25006, recovery); a pg_hba.conf that asks
# local connections for a password refuses the loopback sessions (08001,
# hint about pg_hba.conf, nothing left behind) until dtx.lab_conninfo names
# a password file; a session limit that refuses a later session after the
# scratch schema was made; a caller backend terminated mid-run leaves its
# schema, which the next lab call of the same role (and only of that role)
# drops; two lab runs of one role at the same moment, each reporting its own
# results; a cancel of the caller while a step is blocked (57014, no schema,
# no session left, the caller's session still usable); a role with CREATEDB
# that names a database like a connection string ("dbname=postgres
# user=<superuser>", "host=... port=...") and runs the lab from it: the
# sessions connect as that role to that database (names are values), so an
# "ALTER ROLE ... SUPERUSER" setup fails with 42501.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use DtxTest;

my $t_start = time;
my %secs;

# --- helpers -------------------------------------------------------------

# lab_write_skew('serializable'), its rows for bob's commit, the final
# state and the verdict, as format('%s|%s|%s|%s', step, session, outcome,
# sqlstate) prints them
my $SKEW_REPORT = q{SELECT string_agg(format('%s|%s|%s|%s', step, session, outcome, sqlstate), E'\n') FROM dtx.lab_write_skew('serializable') WHERE step = 8 OR step IS NULL};
my $SKEW_SERIALIZABLE = "8|bob|error|40001\n||final|\n||kept|";

my $LAB_BACKENDS = q{SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pg_dtx lab%'};

# the scratch schemas that exist, comma-separated ('' for none)
sub lab_schemas
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		q{SELECT coalesce(string_agg(nspname, ',' ORDER BY nspname), '') FROM pg_namespace WHERE nspname LIKE 'dtx\_lab\_%'});
}

# every lab session's backend has exited (a closed session's backend may
# take a moment)
sub no_lab_backends_ok
{
	my ($node, $what) = @_;
	ok($node->poll_query_until('postgres', "SELECT ($LAB_BACKENDS) = 0"), $what)
	  or diag($node->safe_psql('postgres',
		q{SELECT string_agg(format('%s %s %s %s', pid, application_name, state, query), E'\n') FROM pg_stat_activity WHERE application_name LIKE 'pg_dtx lab%'}));
}

# A background psql that goes on after errors, with SQLSTATEs in its error
# messages; returns it and its backend's pid.
sub bg_session
{
	my ($node, $user) = @_;
	my $bg = $node->background_psql('postgres', on_error_stop => 0,
		($user ? (extra_params => [ '-U', $user ]) : ()));
	$bg->query_safe('\set VERBOSITY verbose');
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	die "bg_session: no pid ($pid)" unless $pid =~ /^\d+$/;
	return ($bg, $pid);
}

# Send sql to a background psql without waiting; bg_finish waits for it and
# returns (stdout, stderr), or what psql printed before it exited.
my $marker_seq = 0;

sub bg_start
{
	my ($bg, $sql) = @_;
	my $marker = 'lab-test-done-' . ++$marker_seq;
	$bg->{stdout} = '';
	$bg->{stderr} = '';
	$bg->{timeout}->start();    # the whole timeout for this statement
	$bg->{stdin} .= "$sql\n;\n\\echo '$marker'\n\\warn '$marker'\n";
	$bg->{run}->pump_nb();
	return $marker;
}

sub bg_finish
{
	my ($bg, $marker) = @_;
	my $re = qr/$marker\r?\n/;
	eval {
		$bg->{run}->pump()
		  until ($bg->{stdout} =~ $re && $bg->{stderr} =~ $re)
		  || !$bg->{run}->pumpable
		  || $bg->{timeout}->is_expired;
	};
	die "bg_finish: timed out waiting for $marker; stderr: $bg->{stderr}"
	  if $bg->{timeout}->is_expired;
	my ($out, $err) = ($bg->{stdout}, $bg->{stderr});
	$out =~ s/\n?$re//;
	$err =~ s/$re//;
	chomp($out);
	return ($out, $err);
}

sub bg_quit
{
	my ($bg) = @_;
	eval { $bg->quit; };
	return;
}

# ---------------------------------------------------------------------
# 1. A hot standby: the lab needs to create a schema, so it refuses to run
# in recovery (25006) before it opens any session; the primary runs it.
my $t1 = time;
my $primary = dtx_node('lab_primary', allows_streaming => 1);
$primary->safe_psql('postgres', 'CREATE EXTENSION pg_dtx');
$primary->backup('lab_backup');
my $standby = PostgreSQL::Test::Cluster->new('lab_standby');
$standby->init_from_backup($primary, 'lab_backup', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'standby: in recovery');

for my $call ('SELECT * FROM dtx.lab_write_skew()',
	q{SELECT * FROM dtx.lab_run('{"steps": [["A", "select 1"]]}')},
	q{SELECT * FROM dtx.lab_anomalies('serializable')})
{
	my ($state, $msg) = psql_error($standby, $call);
	is($state, '25006', "standby: $call fails with 25006");
	# without the recovery check the lab would still get 25006, from the
	# scratch schema's DROP/CREATE on the standby ("read-only
	# transaction"): the message tells the two apart
	like($msg, qr/recovery/, "standby: the message says the server is in recovery ($msg)");
}
# log_statement = all and %a in log_line_prefix: any statement of a lab
# connection (the admin's sweep comes first) would be logged under its
# application_name
unlike(slurp_file($standby->logfile), qr/pg_dtx lab/, 'standby: no lab connection ran a statement');

# the same call on the primary: the refusal above is the standby's alone
is($primary->safe_psql('postgres', $SKEW_REPORT), $SKEW_SERIALIZABLE,
	'primary: lab_write_skew runs (serializable: bob\'s commit fails with 40001, invariant kept)');
# ... and the log check above would have seen its connections
like(slurp_file($primary->logfile), qr/\] pg_dtx lab admin LOG:  statement: /,
	'primary: the lab\'s statements are logged under its application_name');
$standby->stop;
$primary->stop;
$secs{standby} = time - $t1;

# ---------------------------------------------------------------------
# The lab node for parts 3 to 5 (trust on the local socket, as initdb
# writes it).  lab_alice and lab_bob are ordinary roles that may use the
# lab: LOGIN and CREATE on the database.
my $node = dtx_node('lab');
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_dtx;
	CREATE ROLE lab_alice LOGIN;
	CREATE ROLE lab_bob LOGIN;
	GRANT CREATE ON DATABASE postgres TO lab_alice, lab_bob;
});
# scratch schemas are named dtx_lab_<caller pid>_<role oid>
my $alice_oid = $node->safe_psql('postgres', q{SELECT 'lab_alice'::regrole::oid});

# ---------------------------------------------------------------------
# 3. The caller terminated mid-run (pg_terminate_backend: FATAL, so the
# lab's own cleanup never runs).  Its scratch schema stays; the lab
# sessions lose their client; the next lab call of the same role drops the
# schema, a call of another role leaves it alone.
my $t3 = time;
{
	my ($bg, $pid) = bg_session($node, 'lab_alice');
	my $schema = "dtx_lab_${pid}_$alice_oid";
	my $m = bg_start($bg, q{SELECT * FROM dtx.lab_run('{"steps": [["A", "select pg_sleep(60)"]], "timeout_ms": 120000}')});
	ok($node->poll_query_until('postgres', qq{
		SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '$schema')
		   AND EXISTS (SELECT 1 FROM pg_stat_activity
		                WHERE application_name = 'pg_dtx lab A' AND state = 'active'
		                  AND query = 'select pg_sleep(60)')}),
		'terminate: the scratch schema exists and step 1 is running');
	my $sessions = $node->safe_psql('postgres',
		q{SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_activity WHERE application_name LIKE 'pg_dtx lab%'});
	is($sessions, 'pg_dtx lab A,pg_dtx lab admin', 'terminate: the run has its admin connection and session A');

	is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid, 60000)"), 't',
		'terminate: the caller backend is terminated and gone');
	my ($out, $err) = bg_finish($bg, $m);
	like($err, qr/FATAL:\s+57P01: terminating connection due to administrator command/,
		'terminate: the call ended with the FATAL of pg_terminate_backend');
	unlike($out, qr/\|ok\|/, 'terminate: the call reported nothing');
	bg_quit($bg);

	is(lab_schemas($node), $schema, "terminate: the scratch schema $schema is left behind (the caller died before cleaning up)");
	# the admin connection was idle: it sees its client gone at once.
	# Session A is inside pg_sleep(60): the lab sets
	# client_connection_check_interval = 1s on its sessions, so it notices
	# its client is gone and stops long before the 60 s are up.
	ok($node->poll_query_until('postgres',
			q{SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'pg_dtx lab admin'}),
		'terminate: the lab\'s admin backend exits once its client is gone');
	ok($node->poll_query_until('postgres',
			q{SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'pg_dtx lab A'}),
		'terminate: session A stops its 60 s statement once it notices its client is gone');
	like(slurp_file($node->logfile), qr/pg_dtx lab A (?:FATAL|LOG):\s+(?:\S+:\s+)?connection to client lost/,
		'terminate: ... because it saw its client gone (client_connection_check_interval), not because the sleep ended');

	# another role's lab call: only its own leftovers are swept (it could
	# not drop lab_alice's schema anyway)
	is($node->safe_psql('postgres',
			q{SELECT format('%s|%s|%s', step, outcome, result) FROM dtx.lab_run('{"steps": [["A", "select 1"]]}')},
			extra_params => [ '-U', 'lab_bob' ]),
		'1|ok|1', 'terminate: a lab call of another role runs');
	is(lab_schemas($node), $schema, 'terminate: ... and leaves lab_alice\'s leftover schema alone');

	# the same role: its leftover is dropped (while session A still sleeps)
	is($node->safe_psql('postgres',
			q{SELECT format('%s|%s|%s', step, outcome, result) FROM dtx.lab_run('{"steps": [["A", "select 2"]]}')},
			extra_params => [ '-U', 'lab_alice' ]),
		'1|ok|2', 'terminate: the next lab call of the same role runs');
	is(lab_schemas($node), '', 'terminate: ... and has dropped the leftover schema (and its own)');

	no_lab_backends_ok($node, 'terminate: every lab session of the dead caller has exited');
}
$secs{terminate} = time - $t3;

# ---------------------------------------------------------------------
# 4. Two lab runs of the same role at the same moment, from two backends.
# Each holds a lock the other knows nothing about and waits at a gate (an
# advisory lock held here): the test sees both runs mid-run at once, with a
# blocked step each, then opens the gate.  Each report must be its own:
# its own blocked step released by its own session, its own 40001, its own
# final tables.  Neither run's sweep may drop the other's live schema.
my $t4 = time;
{
	my $schedule = sub {
		my ($n) = @_;
		return qq{{"setup": ["create table test (id int primary key, value int)",
		           "insert into test values (1, 10), (2, 20)",
		           "create table who (run text)",
		           "insert into who values (''run $n'')"],
		 "steps": [["T1", "begin"], ["T2", "begin"],
		           ["T1", "select * from test where id in (1, 2)"],
		           ["T2", "select * from test where id in (1, 2)"],
		           ["T1", "update test set value = 11 where id = 1"],
		           ["T2", "update test set value = 21 where id = 2"],
		           ["L", "begin"],
		           ["L", "lock table who in exclusive mode"],
		           ["W", "insert into who values (''run $n W'')"],
		           ["G", "select ''gate open'' from (select pg_advisory_lock_shared(4242)) g"],
		           ["L", "commit"],
		           ["T1", "commit"],
		           ["T2", "commit"]],
		 "invariant": "(select count(*) from who) = 2",
		 "timeout_ms": 120000}};
	};
	my $expected = sub {
		my ($n) = @_;
		return join("\n",
			"1|T1|begin|ok|BEGIN||",
			"2|T2|begin|ok|BEGIN||",
			"3|T1|select * from test where id in (1, 2)|ok|(1,10), (2,20)||",
			"4|T2|select * from test where id in (1, 2)|ok|(1,10), (2,20)||",
			"5|T1|update test set value = 11 where id = 1|ok|UPDATE 1||",
			"6|T2|update test set value = 21 where id = 2|ok|UPDATE 1||",
			"7|L|begin|ok|BEGIN||",
			"8|L|lock table who in exclusive mode|ok|LOCK TABLE||",
			"9|W|insert into who values ('run $n W')|blocked|waiting for L||",
			"10|G|select 'gate open' from (select pg_advisory_lock_shared(4242)) g|ok|gate open||",
			"11|L|commit|ok|COMMIT||",
			"9|W|insert into who values ('run $n W')|ok|INSERT 0 1||11",
			"12|T1|commit|ok|COMMIT||",
			"13|T2|commit|error||40001|",
			"||table test|final|(1,11), (2,20)||",
			"||table who|final|run $n, run $n W||",
			"||(select count(*) from who) = 2|kept|||");
	};

	my ($gate) = bg_session($node);
	$gate->query_safe('SELECT pg_advisory_lock(4242)');
	my (@bg, @pid, @m);
	for my $n (1, 2)
	{
		($bg[$n], $pid[$n]) = bg_session($node, 'lab_alice');
		$m[$n] = bg_start($bg[$n],
			"SELECT step, session, statement, outcome, result, sqlstate, after_step FROM dtx.lab_run('"
			  . $schedule->($n) . "', 'serializable')");
	}
	ok($node->poll_query_until('postgres', qq{
		SELECT (SELECT count(*) FROM pg_namespace WHERE nspname IN ('dtx_lab_$pid[1]_$alice_oid', 'dtx_lab_$pid[2]_$alice_oid')) = 2
		   AND (SELECT count(*) FROM pg_stat_activity
		         WHERE application_name IN ('pg_dtx lab W', 'pg_dtx lab G')
		           AND wait_event_type = 'Lock') = 4}),
		'concurrent: both runs are mid-run at once (each with a blocked step and a step at the gate)');
	is($gate->query_safe('SELECT pg_advisory_unlock(4242)'), 't', 'concurrent: the gate opens');
	for my $n (1, 2)
	{
		my ($out, $err) = bg_finish($bg[$n], $m[$n]);
		is($err, '', "concurrent: run $n raised no error");
		is($out, $expected->($n), "concurrent: run $n reports its own steps, blocking, 40001 and final state");
	}
	is(lab_schemas($node), '', 'concurrent: both scratch schemas are dropped');

	# the same with the Hermitage matrix, twice at once (15 lab runs each,
	# overlapping): both get Hermitage's serializable results
	my $hermitage_serializable = join("\n",
		'g0|prevented|abort (40001)',
		'g1a|prevented|snapshot',
		'g1b|prevented|snapshot',
		'g1c|prevented|snapshot',
		'otv|prevented|abort (40001)',
		'pmp|prevented|snapshot',
		'pmp-write|prevented|abort (40001)',
		'p4|prevented|abort (40001)',
		'g-single|prevented|snapshot',
		'g-single-dependencies|prevented|snapshot',
		'g-single-write-1|prevented|abort (40001)',
		'g-single-write-2|prevented|blocking',
		'g2-item|prevented|abort (40001)',
		'g2|prevented|abort (40001)',
		'g2-two-edges|prevented|abort (40001)');
	for my $n (1, 2)
	{
		$m[$n] = bg_start($bg[$n], q{SELECT test, result, how FROM dtx.lab_anomalies('serializable')});
	}
	for my $n (1, 2)
	{
		my ($out, $err) = bg_finish($bg[$n], $m[$n]);
		is($err, '', "concurrent anomalies: run $n raised no error");
		is($out, $hermitage_serializable,
			"concurrent anomalies: run $n reports every anomaly prevented at serializable (g2-item by 40001)");
		bg_quit($bg[$n]);
	}
	bg_quit($gate);
	is(lab_schemas($node), '', 'concurrent anomalies: no scratch schema left');
	no_lab_backends_ok($node, 'concurrent: every lab session has exited');
}
$secs{concurrent} = time - $t4;

# ---------------------------------------------------------------------
# 5. pg_cancel_backend of the caller while step 3 is blocked by session A's
# lock and step 4 runs: the call ends with 57014, the scratch schema is
# gone by the time the error reaches the client, the sessions exit, and the
# caller's session can run the lab again.
my $t5 = time;
{
	my ($bg, $pid) = bg_session($node, 'lab_alice');
	my $m = bg_start($bg, q{SELECT * FROM dtx.lab_run('{"setup": "create table t (id int)",
		"steps": [["A", "begin"], ["A", "lock table t"], ["B", "select * from t"],
		          ["A", "select pg_sleep(60)"]],
		"timeout_ms": 120000}')});
	ok($node->poll_query_until('postgres', qq{
		SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'dtx_lab_${pid}_$alice_oid')
		   AND EXISTS (SELECT 1 FROM pg_stat_activity
		                WHERE application_name = 'pg_dtx lab B' AND wait_event_type = 'Lock'
		                  AND query = 'select * from t')
		   AND EXISTS (SELECT 1 FROM pg_stat_activity
		                WHERE application_name = 'pg_dtx lab A' AND state = 'active'
		                  AND query = 'select pg_sleep(60)')}),
		'cancel: session B is blocked by A\'s lock, A runs step 4');
	is($node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)"), 't', 'cancel: the caller is sent a cancel');
	my ($out, $err) = bg_finish($bg, $m);
	like($err, qr/ERROR:\s+57014: canceling statement due to user request/, 'cancel: the call ends with 57014');
	is($out, '', 'cancel: the call returned no rows');
	is(lab_schemas($node), '', 'cancel: the scratch schema was dropped before the error reached the client');
	no_lab_backends_ok($node, 'cancel: every lab session has exited');

	# the session that was cancelled runs the lab again
	$m = bg_start($bg, $SKEW_REPORT);
	($out, $err) = bg_finish($bg, $m);
	is($err, '', 'cancel: the same session runs the lab again without error');
	is($out, $SKEW_SERIALIZABLE, 'cancel: ... with the expected report');
	bg_quit($bg);
	is(lab_schemas($node), '', 'cancel: no scratch schema left');
	no_lab_backends_ok($node, 'cancel: no lab session left after the second call');
}
$secs{cancel} = time - $t5;

# ---------------------------------------------------------------------
# 6. Names are values, never connection strings.  A role with CREATEDB
# (not a superuser) names a database like a connection string and runs the
# lab from it.  Were the database name expanded by libpq (expand_dbname),
# the lab would connect as the superuser to postgres and the setup "ALTER
# ROLE lab_creator SUPERUSER" would succeed; or it would connect to another
# host and port.  The lab must connect as the caller, to the database of
# that very name: the setup fails with 42501, the role stays an ordinary
# one, and the admin connection and the session report the caller and the
# odd database.
my $t6 = time;
{
	my $su = $node->safe_psql('postgres', 'SELECT current_user');
	$node->safe_psql('postgres', 'CREATE ROLE lab_creator LOGIN CREATEDB');
	my @as_creator = (extra_params => [ '-U', 'lab_creator' ]);
	for my $db ("dbname=postgres user=$su", "host=/nonexistent port=1 dbname=postgres user=$su")
	{
		(my $ident = $db) =~ s/"/""/g;
		$node->safe_psql('postgres', qq{CREATE DATABASE "$ident"}, @as_creator);
		$node->safe_psql($db, 'CREATE EXTENSION pg_dtx');
		is($node->safe_psql($db, 'SELECT current_user || \'|\' || current_database()', @as_creator),
			"lab_creator|$db", "names: lab_creator is connected to database \"$db\"");

		my ($state, $msg) = psql_error($node,
			q{SELECT * FROM dtx.lab_run('{"setup": "ALTER ROLE lab_creator SUPERUSER", "steps": [["T1", "select current_user"]]}')},
			db => $db, @as_creator);
		is($state, '42501', "names ($db): the setup ALTER ROLE ... SUPERUSER fails with 42501 ($msg)");
		is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'lab_creator'}),
			'f', "names ($db): lab_creator is not superuser afterwards");

		is($node->safe_psql($db, q{SELECT string_agg(format('%s|%s|%s|%s', step, session, outcome, result), E'\n')
			FROM dtx.lab_run('{"setup": "create table who as select current_user::text as u, current_database()::text as d, inet_server_port() as p",
			                   "steps": [["T1", "select current_user, current_database(), inet_server_port()"]]}')}, @as_creator),
			join("\n", "1|T1|ok|(lab_creator,$db,null)", "||final|(lab_creator,$db,null)"),
			"names ($db): the admin connection and the session ran as lab_creator in database \"$db\", over the Unix socket");
		is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'lab_creator'}),
			'f', "names ($db): lab_creator is still not superuser");
	}
	is(lab_schemas($node), '', 'names: no scratch schema left in postgres');
	no_lab_backends_ok($node, 'names: no lab session left');
}
$secs{names} = time - $t6;

# ---------------------------------------------------------------------
# 7. COPY in a schedule.  The lab has no data to send and nowhere to put
# rows: COPY FROM STDIN is failed, the rows of COPY TO STDOUT are read and
# dropped, and the statement is reported as an error 0A000; the session
# goes on.  In setup the call fails with 0A000; in teardown it is reported.
# A COPY step still streaming rows ends on statement_timeout, on a cancel
# and on a terminate of the caller.  (Before, every result loop took the
# COPY result for a new result and spun forever at 100% CPU, deaf to
# statement_timeout, cancel and terminate: each call here is bounded, and
# a spinning instance is restarted so that the rest of the test can run.)
my $t7 = time;
{
	my $COPY_IN = 'COPY FROM STDIN is not supported in the isolation lab; the statement was failed';
	my $COPY_OUT = 'COPY TO STDOUT is not supported in the isolation lab; its rows were discarded';
	# the report of a schedule as step|session|outcome|result|sqlstate|message
	my $report = sub {
		return q{SELECT string_agg(format('%s|%s|%s|%s|%s|%s', step, session, outcome, result, sqlstate, message), E'\n') FROM dtx.lab_run('}
		  . $_[0] . q{')};
	};

	# run sql as lab_alice, at most $secs seconds: (stderr, stdout, timed out)
	my $bounded = sub {
		my ($sql, $secs) = @_;
		my ($out, $err, $timed_out) = ('', '', 0);
		$node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
			stdout => \$out, stderr => \$err,
			timeout => $secs, timed_out => \$timed_out,
			extra_params => [ '-U', 'lab_alice' ]);
		if ($timed_out)
		{
			# the caller backend still spins: only a restart ends it
			$node->stop('immediate');
			$node->start;
		}
		return ($err, $out, $timed_out);
	};

	my ($err, $out, $to) = $bounded->($report->(
		'{"steps": [["T1", "copy (select 1) to stdout"], ["T1", "select 2"]]}'), 60);
	ok(!$to, 'copy: COPY TO STDOUT as a step returns');
	is($err, '', 'copy: ... without an error of the call');
	is($out, join("\n", "1|T1|error|COPY 1|0A000|$COPY_OUT", '2|T1|ok|2||'),
		'copy: ... reported as 0A000 (rows discarded), and the session runs the next step');

	($err, $out, $to) = $bounded->($report->(
		'{"setup": "create table t (id int)",
		  "steps": [["T1", "begin"], ["T1", "copy t from stdin"], ["T1", "select 2"], ["T1", "rollback"],
		            ["T2", "copy (select g from generate_series(1, 200000) g) to stdout; select 3"],
		            ["T2", "copy t from stdin; select 4"],
		            ["T2", "select count(*) from t"]]}'), 60);
	ok(!$to, 'copy: COPY FROM STDIN and a long COPY TO STDOUT as steps return');
	is($err, '', 'copy: ... without an error of the call');
	is($out, join("\n",
			'1|T1|ok|BEGIN||',
			"2|T1|error||0A000|$COPY_IN",
			'3|T1|error||25P02|current transaction is aborted, commands ignored until end of transaction block',
			'4|T1|ok|ROLLBACK||',
			"5|T2|error|3|0A000|$COPY_OUT",
			"6|T2|error||0A000|$COPY_IN",
			'7|T2|ok|0||',
			'||final|(no rows)||'),
		'copy: ... COPY FROM STDIN failed (its transaction aborted), 200000 rows discarded and the statement after it run, nothing loaded');

	($err, $out, $to) = $bounded->(
		q{SELECT * FROM dtx.lab_run('{"setup": ["create table t (id int)", "copy t from stdin"], "steps": [["T1", "select 1"]]}')}, 60);
	ok(!$to, 'copy: COPY FROM STDIN in setup returns');
	like($err, qr/ERROR:\s+0A000: setup failed: \Q$COPY_IN\E/, 'copy: ... the call fails with 0A000');
	like($err, qr/HINT:\s+Load data with INSERT/, 'copy: ... with a hint');

	($err, $out, $to) = $bounded->($report->(
		'{"setup": "create table t (id int)", "steps": [["T1", "select 1"]],
		  "teardown": ["copy t to stdout", "copy t from stdin", "drop table t"]}'), 60);
	ok(!$to, 'copy: COPY in teardown returns');
	is($err, '', 'copy: ... without an error of the call');
	is($out, join("\n", '1|T1|ok|1||',
			"||final|(no rows)||",
			"|(teardown)|error||0A000|$COPY_OUT",
			"|(teardown)|error||0A000|$COPY_IN"),
		'copy: ... each COPY reported as a teardown error (0A000), the next teardown statement run');

	# a COPY step that streams rows for a long time: statement_timeout,
	# cancel and terminate each end the call
	# (generate_series in the select list streams its rows; in FROM it
	# would first materialize them all)
	my $ENDLESS = q{SELECT * FROM dtx.lab_run('{"steps": [["T1", "copy (select generate_series(1, 1000000000)) to stdout"]], "timeout_ms": 600000}')};
	($err, $out, $to) = $bounded->("SET statement_timeout = '2s';\n$ENDLESS", 60);
	ok(!$to, 'copy: an endless COPY step ends on statement_timeout');
	like($err, qr/ERROR:\s+57014: canceling statement due to statement timeout/, 'copy: ... with 57014');
	is(lab_schemas($node), '', 'copy: ... no scratch schema left');
	no_lab_backends_ok($node, 'copy: ... no lab session left');

	for my $how ('cancel', 'terminate')
	{
		my ($bg, $pid) = bg_session($node, 'lab_alice');
		my $m = bg_start($bg, $ENDLESS);
		ok($node->poll_query_until('postgres', q{
			SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			                WHERE application_name = 'pg_dtx lab T1' AND state = 'active'
			                  AND query LIKE 'copy %'
			                  AND clock_timestamp() - query_start > interval '1 second')}),
			"copy $how: the COPY step has been streaming rows for a second");
		is($node->safe_psql('postgres', "SELECT pg_${how}_backend($pid)"), 't', "copy $how: pg_${how}_backend of the caller");
		my $ended = 0;
		for (1 .. 600)
		{
			my $state = $node->safe_psql('postgres', "SELECT coalesce((SELECT state FROM pg_stat_activity WHERE pid = $pid), 'gone')");
			if ($state eq ($how eq 'cancel' ? 'idle' : 'gone'))
			{
				$ended = 1;
				last;
			}
			Time::HiRes::usleep(50_000);
		}
		ok($ended, "copy $how: the call ends within 30 s");
		if (!$ended)
		{
			# the restart first: psql would wait for the spinning backend
			$node->stop('immediate');
			$node->start;
			bg_quit($bg);
			next;
		}
		my ($o, $e) = bg_finish($bg, $m);
		like($e, $how eq 'cancel'
			  ? qr/ERROR:\s+57014: canceling statement due to user request/
			  : qr/FATAL:\s+57P01: terminating connection due to administrator command/,
			"copy $how: ... with " . ($how eq 'cancel' ? '57014' : 'FATAL 57P01'));
		bg_quit($bg);
		if ($how eq 'cancel')
		{
			is(lab_schemas($node), '', 'copy cancel: no scratch schema left');
		}
		else
		{
			# terminated: no cleanup ran (as in part 3); the next call of
			# the role sweeps the schema
			is($node->safe_psql('postgres',
					q{SELECT format('%s|%s|%s', step, outcome, result) FROM dtx.lab_run('{"steps": [["A", "select 5"]]}')},
					extra_params => [ '-U', 'lab_alice' ]),
				'1|ok|5', 'copy terminate: the role runs the lab again');
			is(lab_schemas($node), '', 'copy terminate: ... which swept the leftover schema');
		}
		no_lab_backends_ok($node, "copy $how: no lab session left");
	}
}
$secs{copy} = time - $t7;
$node->stop;

# ---------------------------------------------------------------------
# 2. pg_hba.conf asks local connections for a password (scram).  The
# harness's own superuser keeps trust; lab_user has a password.  The lab's
# loopback sessions carry no password, so they are refused: 08001 with a
# hint about pg_hba.conf, nothing left behind.  Then dtx.lab_conninfo names
# a password file (libpq's passfile=, one line per role, readable by the
# server's OS user): the same call runs.  A passfile rather than password=:
# dtx.lab_conninfo is readable by every role (SHOW), and one password=
# would be sent for every role that runs the lab.
my $t2 = time;
my $hn = dtx_node('lab_hba');
my $su = $hn->safe_psql('postgres', 'SELECT current_user');
$hn->safe_psql('postgres', q{
	CREATE EXTENSION pg_dtx;
	SET password_encryption = 'scram-sha-256';
	CREATE ROLE lab_user LOGIN PASSWORD 'lab-secret';
	GRANT CREATE ON DATABASE postgres TO lab_user;
});
{
	open(my $hba, '>', $hn->data_dir . '/pg_hba.conf') or die $!;
	print $hba "local all $su trust\n";
	print $hba "local all all scram-sha-256\n";
	close($hba);
}
$hn->reload;

my @as_lab_user = (extra_params => [ '-U', 'lab_user' ]);

# the postmaster has the new rules once lab_user without a password is
# turned away
{
	my $refused = 0;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	my $err = '';
	while (time < $deadline)
	{
		my $rc = $hn->psql('postgres', 'SELECT 1', stdout => \my $out, stderr => \$err, @as_lab_user);
		if ($rc != 0 && $err =~ /no password supplied|password authentication failed/)
		{
			$refused = 1;
			last;
		}
		Time::HiRes::usleep(100_000);
	}
	ok($refused, 'hba: lab_user without a password is refused') or diag($err);
}

{
	local $ENV{PGPASSWORD} = 'lab-secret';
	is($hn->safe_psql('postgres', 'SELECT current_user', @as_lab_user), 'lab_user',
		'hba: lab_user with its password connects');

	for my $call ('SELECT * FROM dtx.lab_write_skew()',
		q{SELECT * FROM dtx.lab_run('{"setup": "create table t (id int)", "steps": [["A", "select 1"]]}')})
	{
		my ($state, $msg, $stderr) = psql_error($hn, $call, @as_lab_user);
		is($state, '08001', "hba: $call fails with 08001");
		like($msg, qr/could not open isolation lab session "admin"/, 'hba: ... on the first connection (admin)');
		like($stderr, qr/DETAIL:.*password/, 'hba: ... the detail has libpq\'s password complaint');
		like($stderr, qr/HINT:.*pg_hba\.conf/, 'hba: ... the hint mentions pg_hba.conf');
	}
	is(lab_schemas($hn), '', 'hba: no scratch schema left');
	no_lab_backends_ok($hn, 'hba: no lab session left');

	# dtx.lab_conninfo is for superusers only (PGC_SUSET)
	my ($state) = psql_error($hn, q{SET dtx.lab_conninfo = 'host=/tmp'}, @as_lab_user);
	is($state, '42501', 'hba: lab_user may not set dtx.lab_conninfo');
}

my $passfile = PostgreSQL::Test::Utils::tempdir() . '/lab.pgpass';
{
	open(my $pf, '>', $passfile) or die $!;
	print $pf '*:' . $hn->port . ":*:lab_user:lab-secret\n";
	close($pf);
	chmod(0600, $passfile) or die $!;
}
# a conninfo value in single quotes, then an SQL literal
my $conninfo = join(' ', map {
		my ($k, $v) = @$_;
		$v =~ s/([\\'])/\\$1/g;
		"$k='$v'"
	} ([ 'host', $hn->host ], [ 'port', $hn->port ], [ 'passfile', $passfile ]));
(my $conninfo_sql = $conninfo) =~ s/'/''/g;
$hn->safe_psql('postgres', "ALTER SYSTEM SET dtx.lab_conninfo = '$conninfo_sql'");
$hn->reload;
ok($hn->poll_query_until('postgres', "SELECT current_setting('dtx.lab_conninfo') = '$conninfo_sql'"),
	'hba: dtx.lab_conninfo names the password file');

{
	local $ENV{PGPASSWORD} = 'lab-secret';
	my ($rc, $out, $err);
	$rc = $hn->psql('postgres',
		$SKEW_REPORT,
		stdout => \$out, stderr => \$err, @as_lab_user);
	is($rc . '|' . $err, '0|', 'hba: with dtx.lab_conninfo, lab_user\'s lab call runs');
	is($out, $SKEW_SERIALIZABLE, 'hba: ... and reports the write skew prevented (40001)');
	is(lab_schemas($hn), '', 'hba: ... no scratch schema left');
	no_lab_backends_ok($hn, 'hba: ... no lab session left');

	# the setting may name a password file or hold a password: only
	# superusers read it
	my ($state) = psql_error($hn, q{SHOW dtx.lab_conninfo}, @as_lab_user);
	is($state, '42501', 'hba: lab_user may not read dtx.lab_conninfo');
	is($hn->safe_psql('postgres', q{SELECT count(*) FROM pg_settings WHERE name = 'dtx.lab_conninfo'},
			extra_params => [ '-U', 'lab_user' ]), '0', 'hba: ... nor see it in pg_settings');

	# A session refused after the scratch schema was made and the setup ran:
	# CONNECTION LIMIT 3 lets in the caller, the admin connection and alice;
	# bob's session is refused.  The schema is dropped on that path too.
	# (the backends of lab_user's earlier psql calls must be gone first: they
	# count against the limit until they exit)
	$hn->safe_psql('postgres', 'ALTER ROLE lab_user CONNECTION LIMIT 3');
	ok($hn->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = 'lab_user'}),
		'connection limit: no backend of lab_user is left from earlier calls');
	my ($state, $msg, $stderr) = psql_error($hn, 'SELECT * FROM dtx.lab_write_skew()', @as_lab_user);
	is($state, '08001', 'connection limit: the call fails with 08001');
	# bob's session; alice's at worst, should a backend that has just left
	# pg_stat_activity still hold its slot: either way after the admin
	# connection had made the schema and run the setup
	like($msg, qr/could not open isolation lab session "(bob|alice)"/,
		'connection limit: ... at a session, after the admin connection made the schema and ran the setup');
	like($stderr, qr/DETAIL:.*too many connections for role/, 'connection limit: ... refused by the role\'s limit');
	is(lab_schemas($hn), '', 'connection limit: the scratch schema was dropped before the error reached the client');
	no_lab_backends_ok($hn, 'connection limit: no lab session left');
	$hn->safe_psql('postgres', 'ALTER ROLE lab_user CONNECTION LIMIT -1');
}
$hn->stop;
$secs{hba} = time - $t2;

diag(sprintf('report: standby %.0f s, pg_hba %.0f s, terminated caller %.0f s, concurrent runs %.0f s, cancel %.0f s, names %.0f s, copy %.0f s; total %.0f s',
	@secs{qw(standby hba terminate concurrent cancel names copy)}, time - $t_start));

done_testing();

# Participants that misbehave at the protocol level: one that answers every
# query with COPY OUT or COPY IN (test/fake_pg.py), one that authenticates
# and then never answers, one that never finishes the start-up, and a real
# participant sent COPY by the user.
#
# A backend gets an error with an SQLSTATE at once and stays usable (COPY
# used to leave it spinning, deaf to cancel and terminate); a backend
# waiting on a silent participant ends on statement_timeout, cancel and
# terminate; dtx.probe and dtx.in_doubt end by dtx.remote_timeout and no
# longer swallow this backend's own cancel and statement_timeout; and the
# background worker keeps recovering the real participant and delivering
# the outbox while the hostile ones are there, without spinning.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use DtxTest;

# --- the fake servers ----------------------------------------------------------

my $tmp = PostgreSQL::Test::Utils::tempdir();
my (%port, %fake_log, @fakes);
foreach my $mode ('copy-out', 'copy-in', 'silent', 'silent-after-auth')
{
	my $portfile = "$tmp/$mode.port";
	$fake_log{$mode} = "$tmp/$mode.log";
	push @fakes, IPC::Run::start(
		[ 'python3', 'test/fake_pg.py', '--mode', $mode, '--port-file', $portfile,
		  '--log', $fake_log{$mode} ],
		'>', \my $out, '2>', \my $err);
	my $deadline = time + 30;
	usleep(50_000) while !-s $portfile && time < $deadline;
	open(my $pf, '<', $portfile) or die "fake server $mode did not start: $err";
	chomp($port{$mode} = <$pf>);
	close($pf);
}

# the fake servers go when the test ends, however it ends
END { local $?; $_->kill_kill foreach @fakes; }

sub fake_log
{
	my ($mode) = @_;
	return -e $fake_log{$mode} ? slurp_file($fake_log{$mode}) : '';
}

# --- the clusters --------------------------------------------------------------

# recovery off at first: the worker part turns it on
my $coord = dtx_node('coord', conf => join("\n",
	"dtx.recovery_interval = 0",
	"dtx.remote_timeout = '2s'",
	"dtx.connect_timeout = '2s'",
	"dtx.cancel_timeout = '1s'"));
my $pa = dtx_node('pa');
$pa->safe_psql('postgres', q{
	CREATE TABLE t (id int PRIMARY KEY);
	CREATE TABLE events (id bigint PRIMARY KEY, topic text, key text,
	                     payload jsonb, headers jsonb, created_at timestamptz)});

# the hostile servers first, so that recovery meets them before pa
$coord->safe_psql('postgres', 'CREATE EXTENSION pg_dtx');
my %srv = ('copy-out' => 'f_copyout', 'copy-in' => 'f_copyin',
	'silent' => 'f_silent', 'silent-after-auth' => 'f_noready');
foreach my $mode (sort keys %srv)
{
	$coord->safe_psql('postgres', qq{
		CREATE SERVER $srv{$mode} FOREIGN DATA WRAPPER pg_dtx
		  OPTIONS (host '127.0.0.1', port '$port{$mode}', dbname 'x');
		CREATE USER MAPPING FOR CURRENT_USER SERVER $srv{$mode}});
}
# two more names for the silent one, for a probe of three black holes
foreach my $name ('f_silent2', 'f_silent3')
{
	$coord->safe_psql('postgres', qq{
		CREATE SERVER $name FOREIGN DATA WRAPPER pg_dtx
		  OPTIONS (host '127.0.0.1', port '$port{silent}', dbname 'x');
		CREATE USER MAPPING FOR CURRENT_USER SERVER $name});
}
add_participant($coord, 'pa', $pa, 'postgres');
$coord->safe_psql('postgres', 'CREATE TABLE local_t (id int PRIMARY KEY)');

# the SQLSTATE of the last error in a verbose stderr
sub sqlstate_of
{
	my ($err) = @_;
	my @all = $err =~ /ERROR:\s+([0-9A-Z]{5}):/g;
	return $all[-1] // '';
}

# no backend of the coordinator is still running $like
sub none_active
{
	my ($like) = @_;
	return $coord->safe_psql('postgres', qq{
		SELECT count(*) FROM pg_stat_activity
		 WHERE state = 'active' AND query LIKE '$like' AND pid <> pg_backend_pid()});
}

# ---------------------------------------------------------------------
# COPY sent by the user to a real participant: 0A000 at once (not the
# statement_timeout), the connection closed, the backend usable
my $bg = $coord->background_psql('postgres', on_error_stop => 0);
$bg->query_safe(q{\set VERBOSITY verbose});
foreach my $case (
	[ q{SELECT dtx.exec('pa', 'COPY t FROM STDIN')}, 'COPY FROM STDIN through dtx.exec' ],
	[ q{SELECT dtx.exec('pa', 'COPY (SELECT 1) TO STDOUT')}, 'COPY TO STDOUT through dtx.exec' ],
	[ q{SELECT * FROM dtx.query('pa', 'COPY (SELECT 1) TO STDOUT') AS r(x int)}, 'COPY TO STDOUT through dtx.query' ],
	[ q{SELECT * FROM dtx.query('pa', 'SELECT 1; COPY t FROM STDIN') AS r(x int)}, 'COPY after a query through dtx.query' ])
{
	my ($sql, $what) = @$case;
	my $err = bg_error($bg, "SET statement_timeout = '2s'; $sql");
	is(sqlstate_of($err), '0A000', "$what: 0A000");
	like($err, qr/COPY is not supported by dtx\.exec\/dtx\.query/, "$what: the message says so");
	is($bg->query_safe(q{RESET statement_timeout; SELECT count(*) FROM dtx.connections() WHERE server = 'pa'}),
		'0', "$what: the connection was closed");
	is($bg->query_safe(q{SELECT dtx.exec('pa', 'SELECT 1')}), '1', "$what: the backend and participant are usable");
}
is(none_active('%COPY%'), '0', 'COPY: no backend left running');

# inside a transaction: the global transaction fails cleanly, also past a
# savepoint rolled back to
$bg->query_safe(q{BEGIN});
$bg->query_safe(q{SELECT dtx.exec('pa', 'INSERT INTO t VALUES (1)')});
$bg->query_safe(q{SAVEPOINT s});
is(sqlstate_of(bg_error($bg, q{SELECT dtx.exec('pa', 'COPY t FROM STDIN')})), '0A000', 'COPY in a transaction: 0A000');
$bg->query_safe(q{ROLLBACK TO SAVEPOINT s});
like(bg_error($bg, q{COMMIT}), qr/DX00[13]/, 'COPY in a transaction: the commit is refused');
is($pa->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 1'), '0', 'COPY in a transaction: nothing committed on the participant');
is($pa->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0', 'COPY in a transaction: nothing prepared');

# ---------------------------------------------------------------------
# a participant that answers every query with COPY OUT or COPY IN
foreach my $mode ('copy-out', 'copy-in')
{
	my $err = bg_error($bg, "SET statement_timeout = '5s'; SELECT dtx.exec('$srv{$mode}', 'SELECT 1')");
	is(sqlstate_of($err), '0A000', "$mode participant: dtx.exec gets 0A000");
	$err = bg_error($bg, "SELECT * FROM dtx.query('$srv{$mode}', 'SELECT 1') AS r(x int)");
	is(sqlstate_of($err), '0A000', "$mode participant: dtx.query gets 0A000");
	is($bg->query_safe(q{RESET statement_timeout; SELECT 42}), '42', "$mode participant: the backend is usable");
	my $probe = $bg->query_safe("SELECT reachable || ' ' || error FROM dtx.probe('$srv{$mode}')");
	like($probe, qr/^false .*answered with COPY/, "$mode participant: dtx.probe reports the COPY as its error");
}
$bg->quit;

# ---------------------------------------------------------------------
# a participant that authenticates and then never answers
$bg = $coord->background_psql('postgres', on_error_stop => 0);
$bg->query_safe(q{\set VERBOSITY verbose});
my $pid = $bg->query_safe(q{SELECT pg_backend_pid()});
is(sqlstate_of(bg_error($bg, q{SET statement_timeout = '2s'; SELECT dtx.exec('f_silent', 'SELECT 1')})),
	'57014', 'silent participant: statement_timeout ends dtx.exec');
is($bg->query_safe(q{RESET statement_timeout; SELECT dtx.exec('pa', 'SELECT 1')}), '1',
	'silent participant: the backend is usable after statement_timeout');

# pg_cancel_backend
sub start_stuck
{
	my ($bg, $pid, $sql, $what) = @_;
	$bg->{stdin} .= "$sql;\n";
	$bg->{run}->pump_nb();
	ok($coord->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE pid = $pid AND state = 'active' AND wait_event_type = 'Extension'}),
		"$what: waiting on the participant");
}
start_stuck($bg, $pid, q{SELECT dtx.exec('f_silent', 'SELECT 1')}, 'cancel, dtx.exec');
$coord->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
like(bg_error($bg, q{SELECT 'after cancel'}), qr/canceling statement due to user request/,
	'silent participant: pg_cancel_backend ends dtx.exec');
is($bg->query_safe(q{SELECT x FROM dtx.query('pa', 'SELECT 2') AS r(x int)}), '2', 'silent participant: usable after cancel');

# dtx_try no longer swallows this backend's cancel: a probe of three black
# holes without a remote deadline ends on one pg_cancel_backend
start_stuck($bg, $pid,
	q{SET dtx.remote_timeout = 0; SELECT p.server, p.error FROM unnest('{f_silent,f_silent2,f_silent3}'::name[]) s, dtx.probe(s) p},
	'cancel, dtx.probe');
$coord->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
like(bg_error($bg, q{RESET dtx.remote_timeout; SELECT 'after cancel'}), qr/canceling statement due to user request/,
	'silent participants: one pg_cancel_backend ends dtx.probe');

# ... and statement_timeout ends dtx.probe and dtx.in_doubt
my $err = bg_error($bg, q{SET dtx.remote_timeout = 0; SET statement_timeout = '2s';
	SELECT * FROM dtx.probe('f_silent')});
is(sqlstate_of($err), '57014', 'silent participant: statement_timeout ends dtx.probe');
like($err, qr/statement timeout/, 'silent participant: dtx.probe ends with the statement timeout');
$err = bg_error($bg, q{SELECT * FROM dtx.in_doubt});
is(sqlstate_of($err), '57014', 'silent participant: statement_timeout ends dtx.in_doubt');
$bg->query_safe(q{RESET dtx.remote_timeout; RESET statement_timeout});
$bg->quit;

# pg_terminate_backend
$bg = $coord->background_psql('postgres', on_error_stop => 0);
$pid = $bg->query_safe(q{SELECT pg_backend_pid()});
start_stuck($bg, $pid, q{SELECT dtx.exec('f_silent', 'SELECT 1')}, 'terminate, dtx.exec');
$coord->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok($coord->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid"),
	'silent participant: pg_terminate_backend ends the backend');
eval { $bg->quit; };

# with dtx.remote_timeout (2 s here), dtx.probe and dtx.in_doubt return,
# each hostile server with its own error, the others proceeding
my ($timed_out, $out, $stderr);
$coord->psql('postgres', q{SELECT server, reachable, error FROM dtx.probe() ORDER BY server},
	stdout => \$out, stderr => \$stderr, timeout => 120, timed_out => \$timed_out);
ok(!$timed_out, 'dtx.probe() over hostile servers returns');
like($out, qr/^f_copyin\|f\|.*answered with COPY/m, 'dtx.probe(): the COPY IN server has its error');
like($out, qr/^f_silent\|f\|participant "f_silent" did not answer within 2000 ms/m, 'dtx.probe(): the silent server has its error');
like($out, qr/^f_noready\|f\|.*timeout expired/m, 'dtx.probe(): the server that never gets ready has its error');
like($out, qr/^pa\|t\|$/m, 'dtx.probe(): the real participant is reachable');
$coord->psql('postgres', q{SELECT server, coalesce(error, gid) FROM dtx.in_doubt ORDER BY server},
	stdout => \$out, stderr => \$stderr, timeout => 120, timed_out => \$timed_out);
ok(!$timed_out, 'dtx.in_doubt over hostile servers returns');
like($out, qr/^f_copyout\|.*answered with COPY/m, 'dtx.in_doubt: the COPY OUT server has its error');
like($out, qr/^f_silent\|participant "f_silent" did not answer within 2000 ms/m, 'dtx.in_doubt: the silent server has its error');
unlike($out, qr/^pa\|/m, 'dtx.in_doubt: nothing in doubt on the real participant');

# ---------------------------------------------------------------------
# the worker: an in-doubt transaction on pa (phase 2 skipped), an outbox
# sink on pa; recovery on, with the hostile servers scanned before pa
$coord->safe_psql('postgres', q{
	SET dtx.fault_point = 'after_local_commit';
	BEGIN;
	INSERT INTO local_t VALUES (100);
	SELECT dtx.exec('pa', 'INSERT INTO t VALUES (100)');
	COMMIT});
is($pa->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '1', 'worker: a transaction is in doubt on pa');
$coord->safe_psql('postgres', q{
	SELECT dtx.sink_create('s', 'postgres', '{"server": "pa", "table": "events"}');
	SELECT dtx.route_create('ev.*', 's');
	SELECT dtx.outbox_send('ev.one', '{"n": 1}')});
my $worker_pid = $coord->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker' AND datname = 'postgres'});
like($worker_pid, qr/^\d+$/, 'worker: running');
ok($pa->poll_query_until('postgres', 'SELECT count(*) = 1 FROM events'), 'worker: first message delivered');

unlink $fake_log{$_} foreach keys %fake_log;
$coord->safe_psql('postgres', q{ALTER SYSTEM SET dtx.recovery_interval = '1s'; SELECT pg_reload_conf()});
ok($pa->poll_query_until('postgres', 'SELECT count(*) = 0 FROM pg_prepared_xacts'),
	'worker: the in-doubt transaction on pa was resolved');
is($pa->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 100'), '1', 'worker: ... by committing it');
# (the hostile servers come first in the catalog, so this is immediate)
foreach my $mode ('copy-out', 'silent')
{
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	sleep 1 while fake_log($mode) !~ /query .*pg_prepared_xacts/ && time < $deadline;
	like(fake_log($mode), qr/query .*pg_prepared_xacts/, "worker: recovery met the $mode server");
}

# keeps working: another message, another in-doubt transaction
$coord->safe_psql('postgres', q{SELECT dtx.outbox_send('ev.two', '{"n": 2}')});
ok($pa->poll_query_until('postgres', 'SELECT count(*) = 2 FROM events'), 'worker: second message delivered');
$coord->safe_psql('postgres', q{
	SET dtx.fault_point = 'after_local_commit';
	BEGIN;
	INSERT INTO local_t VALUES (101);
	SELECT dtx.exec('pa', 'INSERT INTO t VALUES (101)');
	COMMIT});
ok($pa->poll_query_until('postgres', 'SELECT count(*) = 1 FROM t WHERE id = 101'),
	'worker: a second in-doubt transaction was resolved');
is($coord->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker' AND datname = 'postgres'}),
	$worker_pid, 'worker: the same process did it all (no restart)');

# a postgres sink on the COPY OUT server: the sink's error (its connection
# closed), while the sink on pa keeps delivering
$coord->safe_psql('postgres', q{
	SELECT dtx.sink_create('hostile', 'postgres', '{"server": "f_copyout", "table": "events"}');
	SELECT dtx.route_create('hx.*', 'hostile');
	SELECT dtx.outbox_send('hx.one', '{"n": 1}')});
ok($coord->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM dtx.outbox WHERE topic = 'hx.one' AND last_error LIKE '%"f_copyout" answered with COPY%'}),
	'outbox: a postgres sink whose INSERT is answered with COPY gets that error');
$coord->safe_psql('postgres', q{SELECT dtx.outbox_send('ev.three', '{"n": 3}')});
ok($pa->poll_query_until('postgres', 'SELECT count(*) = 3 FROM events'), 'outbox: the other sink still delivers');
is($coord->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker' AND datname = 'postgres'}),
	$worker_pid, 'outbox: still the same worker process');

# not spinning: over 3 s the worker used well under one core
sub cpu_ticks
{
	my ($p) = @_;
	my $stat = slurp_file("/proc/$p/stat");
	my @f = split ' ', substr($stat, rindex($stat, ')') + 2);
	return $f[11] + $f[12];		# utime + stime
}
my $t0 = time;
my $c0 = cpu_ticks($worker_pid);
sleep 3;
my $used = (cpu_ticks($worker_pid) - $c0) / 100.0;	# USER_HZ
my $elapsed = time - $t0;
cmp_ok($used, '<', $elapsed / 2, "worker: not spinning ($used s of CPU in $elapsed s)");

$coord->psql('postgres', q{SELECT count(*) FROM dtx.in_doubt}, timeout => 120, timed_out => \$timed_out);
ok(!$timed_out, 'dtx.in_doubt returns while the worker runs');

# the coordinator never crashed
unlike(slurp_file($coord->logfile), qr/terminated by signal|was terminated by/,
	'no backend crash on the coordinator');

done_testing();

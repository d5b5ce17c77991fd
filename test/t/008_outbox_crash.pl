# Transactional outbox across crashes.
#
# 1. 20 crashes of the source while messages flow (two producers commit,
#    roll back, roll back to savepoints and fail transactions that sent
#    messages): alternately immediate shutdown and kill -9 of the pg_dtx
#    worker, each one landing in the middle of a dispatch round -- with the
#    batch blocked in the postgres sink (the remote INSERT then either
#    lost or committed behind the dead worker's back) or with the HTTP
#    requests in flight.  Afterwards every committed message reached both
#    sinks (a postgres table on another cluster whose database has no
#    pg_dtx, and test/http_server.py), none from a rolled-back transaction
#    did, nothing is dead, the delivered counters are exact, and a
#    consumer applying every delivery (duplicates included) through
#    dtx.inbox_accept applies each message exactly once.
# 2. A poison message, whose HTTP delivery kills the worker each time it is
#    sent, is quarantined in dtx.outbox_dead after dtx.outbox_crash_limit
#    solo attempts (at most crash_limit + 1 crashes), not retried forever;
#    the messages sent with it are delivered, and the key it blocked flows
#    again.
use strict;
use warnings;

use FindBin;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use DtxTest;

my $t_start = time;
my $json = JSON::PP->new->canonical;

# ---------------------------------------------------------------------
# the HTTP endpoint
my $scratch = PostgreSQL::Test::Utils::tempdir();
my $port_file = "$scratch/http.port";
my $http_log = "$scratch/http.log";
my $http_server = IPC::Run::start(
	[ 'python3', "$FindBin::RealBin/../http_server.py", '--port-file', $port_file, '--log', $http_log ],
	'<', \undef, '>', "$scratch/http.out", '2>', "$scratch/http.err");
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
usleep(20_000) until -e $port_file || time > $deadline;
die 'test/http_server.py did not start: ' . (slurp_file("$scratch/http.err") // '') unless -e $port_file;
chomp(my $http_port = slurp_file($port_file));
my $base = "http://127.0.0.1:$http_port";
# no keep-alive: the killer process (a fork) posts too
my $ua = HTTP::Tiny->new(timeout => 30, keep_alive => 0);

sub http_mode
{
	my (%mode) = @_;
	my $r = $ua->post("$base/_admin/mode",
		{ content => $json->encode({ path => '/events', %mode }),
		  headers => { 'Content-Type' => 'application/json' } });
	die "http_server: mode: $r->{status} $r->{content}" unless $r->{success};
	return;
}

# every request the endpoint recorded, in arrival order
sub http_received
{
	my @got;
	open(my $fh, '<', $http_log) or return ();
	while (my $line = <$fh>)
	{
		push @got, $json->decode($line);
	}
	close($fh);
	return @got;
}

# ---------------------------------------------------------------------
# clusters: the source has the outbox; the target cluster receives the
# postgres sink in database sinkdb, which has no pg_dtx (it is only
# preloaded on the cluster, for the consumer database that keeps the inbox)
my $source = dtx_node('source', conf => join("\n",
	"dtx.outbox_poll_interval = '500ms'",
	"dtx.outbox_backoff_base = '100ms'",
	"dtx.outbox_backoff_max = '1s'"));
my $target = dtx_node('target');
$target->safe_psql('postgres', 'CREATE DATABASE sinkdb; CREATE DATABASE consumer;');
$target->safe_psql('sinkdb', q{
	CREATE TABLE events (id bigint PRIMARY KEY, topic text, key text, payload jsonb,
	                     headers jsonb, created_at timestamptz);
	-- the pid of a session whose INSERT into events waits for a lock
	CREATE FUNCTION wait_blocked_insert(timeout_s float8) RETURNS int LANGUAGE plpgsql AS $$
	DECLARE p int; t0 timestamptz := clock_timestamp();
	BEGIN
		LOOP
			PERFORM pg_stat_clear_snapshot();
			SELECT pid INTO p FROM pg_stat_activity
			 WHERE datname = current_database() AND wait_event_type = 'Lock'
			   AND query LIKE 'INSERT INTO %events%' LIMIT 1;
			IF p IS NOT NULL OR clock_timestamp() > t0 + make_interval(secs => timeout_s) THEN
				RETURN p;
			END IF;
			PERFORM pg_sleep(0.002);
		END LOOP;
	END $$;
});
is($target->safe_psql('sinkdb', q{SELECT count(*) FROM pg_extension WHERE extname = 'pg_dtx'}), '0',
	'the target database does not have pg_dtx');

add_participant($source, 'target', $target, 'sinkdb');

# The crash loop kills the worker on arbitrary messages: a message that
# happens to be sent alone at several crashes must not be taken for a
# poison one there (part 2 goes back to the default, 3)
$source->safe_psql('postgres', 'ALTER SYSTEM SET dtx.outbox_crash_limit = 1000; SELECT pg_reload_conf();');
ok($source->poll_query_until('postgres', 'SHOW dtx.outbox_crash_limit', '1000'), 'crash limit 1000 for the crash loop');
$source->safe_psql('postgres', qq{
	SELECT dtx.sink_create('tbl', 'postgres', '{"server": "target", "table": "public.events", "batch_size": 20}');
	SELECT dtx.sink_create('hooks', 'http', '{"url": "$base/events", "concurrency": 10, "timeout_ms": 5000}');
	SELECT dtx.route_create('orders.*', 'tbl');
	SELECT dtx.route_create('orders.*', 'hooks');
	-- ground truth: a committed message has its row here, written in the
	-- same transaction as dtx.outbox_send
	CREATE TABLE produced (id bigint PRIMARY KEY, p int NOT NULL, n bigint NOT NULL);
	CREATE FUNCTION send_msg(p int, n bigint, rb boolean) RETURNS bigint LANGUAGE sql AS \$\$
		SELECT dtx.outbox_send(CASE WHEN n % 2 = 0 THEN 'orders.created' ELSE 'orders.paid' END,
		                       jsonb_build_object('p', p, 'n', n, 'rb', rb, 'pad', repeat('x', (n % 40)::int)),
		                       CASE WHEN n % 3 = 0 THEN NULL ELSE 'cust-' || (n % 11) END,
		                       CASE WHEN n % 4 = 0 THEN jsonb_build_object('trace', 't' || n) END)
	\$\$;
	CREATE FUNCTION produce(p int, n bigint) RETURNS void LANGUAGE sql AS \$\$
		INSERT INTO produced (id, p, n) VALUES (send_msg(p, n, false), p, n)
	\$\$;
	-- 'pid|deliveries recorded' of the worker while the HTTP requests of
	-- a round that began after the call are in flight
	CREATE FUNCTION wait_http_in_flight(timeout_s float8) RETURNS text LANGUAGE plpgsql AS \$\$
	DECLARE p int; t0 timestamptz := clock_timestamp();
	BEGIN
		LOOP
			PERFORM pg_stat_clear_snapshot();
			SELECT pid INTO p FROM pg_stat_activity
			 WHERE backend_type = 'pg_dtx worker' AND datname = current_database()
			   AND state = 'active' AND query = 'outbox: HTTP requests in flight'
			   AND query_start > t0;
			IF p IS NOT NULL AND EXISTS (SELECT FROM dtx.outbox_attempt) THEN
				RETURN p || '|' || (SELECT sum(delivered) FROM dtx.outbox_sink);
			END IF;
			IF clock_timestamp() > t0 + make_interval(secs => timeout_s) THEN
				RETURN NULL;
			END IF;
			PERFORM pg_sleep(0.001);
		END LOOP;
	END \$\$;
});
my $worker_sql = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker' AND datname = 'postgres'};
my $delivered_sql = 'SELECT sum(delivered) FROM dtx.outbox_sink';

# Children (producers, the killer of part 2) and the HTTP endpoint do not
# outlive the test, even when it dies
my $main_pid = $$;
my %children;
END
{
	if ($$ == $main_pid)
	{
		local $?;    # the test's exit status
		kill 'TERM', keys %children;
		waitpid($_, 0) foreach keys %children;
		if ($http_server && $http_server->pumpable)
		{
			$http_server->signal('TERM');
			eval { $http_server->finish };
		}
	}
}

# ---------------------------------------------------------------------
# producers: child processes running short psql sessions in a loop until
# $stop_file exists; connection failures (crashes) are retried.  Each
# iteration is one of: a committed transaction of two messages; a rolled
# back one; one that rolls back to a savepoint; one that fails.  Messages
# of transactions that do not commit carry "rb": true.
my $stop_file = "$scratch/stop-producers";
my $connstr = $source->connstr('postgres');

sub producer_main
{
	my ($p) = @_;
	my %st = (commit => 0, rollback => 0, savepoint => 0, error => 0, failed => 0, other => 0);
	my $other = '';
	my $i = 0;
	while (!-e $stop_file)
	{
		$i++;
		my $n = $p * 10_000_000 + $i * 10;
		my ($kind, $sql);
		if ($i % 8 == 0)
		{
			$kind = 'rollback';
			$sql = "BEGIN; SELECT send_msg($p, $n, true); SELECT send_msg($p, $n + 1, true); ROLLBACK;";
		}
		elsif ($i % 8 == 3)
		{
			$kind = 'savepoint';
			$sql = "BEGIN; SELECT produce($p, $n); SAVEPOINT s; SELECT send_msg($p, $n + 1, true); "
			  . "ROLLBACK TO SAVEPOINT s; SELECT produce($p, $n + 2); COMMIT;";
		}
		elsif ($i % 8 == 5)
		{
			$kind = 'error';
			$sql = "BEGIN; SELECT send_msg($p, $n, true); SELECT 1 / 0; COMMIT;";
		}
		else
		{
			$kind = 'commit';
			$sql = "BEGIN; SELECT produce($p, $n); SELECT produce($p, $n + 1); COMMIT;";
		}
		my ($out, $err) = ('', '');
		IPC::Run::run([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $connstr, '-c', $sql ],
			'<', \undef, '>', \$out, '2>', \$err);
		my $rc = $? >> 8;
		if ($kind eq 'error' && $err =~ /division by zero/)
		{
			$st{error}++;
		}
		elsif ($rc == 0)
		{
			$st{$kind}++;
		}
		elsif ($err =~ /connect|connection|terminat|shut ?down|starting up|recovery mode|No such file|refused|crash of another/i)
		{
			# the outcome of a COMMIT that lost its connection is unknown
			# here: table produced tells
			$st{failed}++;
			usleep(50_000);
			next;
		}
		else
		{
			$st{other}++;
			$other .= "[$kind rc $rc] $err\n" if length($other) < 4000;
		}
		usleep(15_000);
	}
	open(my $fh, '>', "$scratch/producer$p.stats") or die $!;
	print $fh join(' ', map { "$_=$st{$_}" } sort keys %st), "\n", $other;
	close($fh);
}

sub start_producer
{
	my ($p) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		# no END blocks (they would tear down the clusters) in the child
		eval { producer_main($p); };
		print STDERR "producer $p: $@" if $@;
		POSIX::_exit($@ ? 1 : 0);
	}
	$children{$pid} = 1;
	return $pid;
}

# ---------------------------------------------------------------------
# helpers for the crash loop

# wait until the source accepts connections and its worker is running
sub wait_up
{
	my ($what) = @_;
	ok($source->poll_query_until('postgres', "SELECT count(*) FROM ($worker_sql) w", '1'),
		"$what: the source is up and its pg_dtx worker running");
}

# wait for a log line after offset $off (false after $secs seconds)
sub log_wait
{
	my ($node, $re, $off, $secs) = @_;
	my $until = time + $secs;
	while (time < $until)
	{
		my $log = slurp_file($node->logfile, $off);
		return $1 // 1 if $log =~ $re;
		usleep(50_000);
	}
	return undef;
}

# ---------------------------------------------------------------------
# 1. the crash loop
http_mode(delay_ms => 0);
my @producers = map { start_producer($_) } (1, 2);

wait_up('start');
ok($source->poll_query_until('postgres', 'SELECT count(*) >= 50 FROM produced'), 'the producers are committing messages');
ok($target->poll_query_until('sinkdb', 'SELECT count(*) >= 20 FROM events'), 'messages reach the postgres sink');

my %crashes = (immediate => 0, kill9 => 0);
my %points;
my $hit_dispatch = 0;
my $in_flight_at_crash = 0;
my @points = qw(pg_lost pg_committed http);

for my $round (1 .. 20)
{
	my $mode = $round % 2 ? 'immediate' : 'kill9';
	my $point = $points[ int(($round - 1) / 2) % 3 ];
	my $what = "round $round ($mode, $point)";

	# messages flowing since the last restart; slow HTTP answers for a
	# moment, so that a backlog builds up and the batches grow
	http_mode(delay_ms => 150);
	my $before = $source->safe_psql('postgres', 'SELECT count(*) FROM produced');
	ok($source->poll_query_until('postgres', 'SELECT count(*) >= ' . ($before + 40) . ' FROM produced'),
		"$what: the producers commit messages");

	my ($lock, $blocked, $pid, $recorded);
	if ($point eq 'http')
	{
		# HTTP answers held back: the round is surely in flight at the crash
		http_mode(delay_ms => 1000);
		($pid, $recorded) = split /\|/, $source->safe_psql('postgres', 'SELECT wait_http_in_flight(60)');
		$pid //= '';
	}
	else
	{
		# the postgres sink's INSERT waits for a lock: the worker waits
		# for the sink (its HTTP requests of the round done, nothing of
		# the round recorded)
		http_mode(delay_ms => 0);
		$lock = $target->background_psql('sinkdb');
		$lock->query_safe('BEGIN; LOCK TABLE events IN SHARE MODE');
		$blocked = $target->safe_psql('sinkdb', 'SELECT wait_blocked_insert(60)');
		$pid = $source->safe_psql('postgres', $worker_sql);
		$recorded = $source->safe_psql('postgres', $delivered_sql);
	}
	like($pid, qr/^\d+$/, "$what: the worker ($pid) is in the middle of a dispatch");
	$recorded ||= 0;
	like($blocked, qr/^\d+$/, "$what: its INSERT into the postgres sink waits (pid $blocked)") if $lock;

	my $off = -s $source->logfile;
	if ($mode eq 'immediate')
	{
		$source->stop('immediate');
	}
	else
	{
		kill 'KILL', $pid;
		ok(log_wait($source, qr/all server processes terminated; reinitializing/, $off, 60),
			"$what: the postmaster restarts after the worker's kill -9");
	}
	$crashes{$mode}++;
	$points{$point}++;

	if ($lock)
	{
		if ($point eq 'pg_lost')
		{
			# the INSERT dies with its session: these messages reached no one
			is($target->safe_psql('sinkdb', "SELECT pg_terminate_backend($blocked, 30000)"), 't',
				"$what: the sink's INSERT of the dead worker is terminated");
		}
		# pg_committed: the INSERT goes on and commits once the lock is gone
		$lock->query_safe('ROLLBACK');
		$lock->quit;
	}
	http_mode(delay_ms => 0);
	$source->start if $mode eq 'immediate';
	wait_up($what);

	# the new worker finds the attempt that died with the old one, in its
	# first round (over once it has recorded a delivery)
	ok($source->poll_query_until('postgres', "SELECT ($delivered_sql) > $recorded"),
		"$what: the restarted worker delivers");
	my $n = log_wait($source, qr/pg_dtx outbox: (\d+) message\(s\) were being sent when the dispatcher stopped/, $off, 1);
	ok($n, "$what: the restarted worker found the interrupted attempt (" . ($n // 'none') . ' messages)');
	$hit_dispatch++ if $n;
	$in_flight_at_crash += $n // 0;
}
is("$crashes{immediate}/$crashes{kill9}", '10/10', '10 immediate shutdowns and 10 kill -9 of the worker');

# stop the producers
open(my $sf, '>', $stop_file) or die $!;
close($sf);
foreach my $pid (@producers)
{
	waitpid($pid, 0);
	is($?, 0, "producer (pid $pid) ended cleanly");
	delete $children{$pid};
}
my %pstats;
my $other_errors = '';
foreach my $p (1, 2)
{
	my ($line, @rest) = split /\n/, slurp_file("$scratch/producer$p.stats");
	foreach (split / /, $line)
	{
		my ($k, $v) = split /=/;
		$pstats{$k} += $v;
	}
	$other_errors .= join("\n", @rest);
}
is($pstats{other}, 0, 'producers: no unexpected error') or diag($other_errors);
ok($pstats{rollback} > 0 && $pstats{savepoint} > 0 && $pstats{error} > 0,
	"producers: transactions rolled back ($pstats{rollback}), rolled back to a savepoint ($pstats{savepoint}), failed ($pstats{error})");

# everything is delivered
ok($source->poll_query_until('postgres', 'SELECT count(*) = 0 FROM dtx.outbox'), 'the outbox drains');
is($source->safe_psql('postgres', 'SELECT count(*) FROM dtx.outbox_attempt'), '0', 'no attempt left');
is($source->safe_psql('postgres', 'SELECT count(*) FROM dtx.outbox_dead'), '0', 'no dead letter');

my %produced;    # id -> n
foreach (split /\n/, $source->safe_psql('postgres', 'SELECT id, n FROM produced'))
{
	my ($id, $n) = split /\|/;
	$produced{$id} = $n;
}
my $committed = scalar(keys %produced);
ok($committed > 500, "$committed messages committed");

# topic|key|trace header that send_msg gave message n ('' for none)
sub expected_fields
{
	my ($n) = @_;
	return join('|', $n % 2 == 0 ? 'orders.created' : 'orders.paid',
		$n % 3 == 0 ? '' : 'cust-' . ($n % 11), $n % 4 == 0 ? "t$n" : '');
}

# the postgres sink: each committed message exactly once, nothing else
my (%in_table, @table_rows);
my ($t_missing, $t_extra, $t_rb, $t_mismatch) = (0, 0, 0, 0);
foreach (split /\n/, $target->safe_psql('sinkdb',
	q{SELECT id, payload->>'n', payload->>'rb', topic, coalesce(key, ''), coalesce(headers->>'trace', '') FROM events}))
{
	my ($id, $n, $rb, @fields) = split /\|/, $_, -1;
	$in_table{$id} = 1;
	push @table_rows, [ $id, $n ];
	$t_rb++ if $rb eq 'true';
	if (!exists $produced{$id}) { $t_extra++; next; }
	$t_mismatch++ if $n != $produced{$id} || join('|', @fields) ne expected_fields($n);
}
$t_missing = grep { !$in_table{$_} } keys %produced;
is($t_missing, 0, 'postgres sink: every committed message is in the target table');
is($t_extra, 0, 'postgres sink: no message that was not committed');
is($t_rb, 0, 'postgres sink: no message of a rolled-back transaction');
is($t_mismatch, 0, 'postgres sink: each row has its message\'s topic, key, payload and headers');

# the HTTP sink: each committed message at least once, nothing else
my (%http_ok, @http_deliveries);
my ($h_extra, $h_rb, $h_badkey, $h_mismatch, $h_total) = (0, 0, 0, 0, 0);
foreach my $r (http_received())
{
	next unless $r->{path} eq '/events';
	my $b = $r->{body};
	$h_total++;
	my $id = $b->{id};
	$h_rb++ if $b->{payload}{rb};
	$h_badkey++ unless defined $r->{idempotency_key} && $r->{idempotency_key} eq $id;
	if (!exists $produced{$id} || $b->{payload}{n} != $produced{$id}) { $h_extra++; next; }
	$h_mismatch++ if join('|', $b->{topic}, $b->{key} // '', ($b->{headers} // {})->{trace} // '')
	  ne expected_fields($b->{payload}{n}) || !$b->{created_at} || ($b->{attempt} // 0) < 1;
	push @http_deliveries, [ $id, $b->{payload}{n} ];
	$http_ok{$id}++ if defined $r->{status} && $r->{status} == 200;
}
my $h_missing = grep { !$http_ok{$_} } keys %produced;
is($h_missing, 0, 'http sink: every committed message was received (200)');
is($h_extra, 0, 'http sink: no message that was not committed');
is($h_rb, 0, 'http sink: no message of a rolled-back transaction');
is($h_badkey, 0, 'http sink: Idempotency-Key is the message id');
is($h_mismatch, 0, 'http sink: each request has its message\'s topic, key, headers, created_at and attempt');
my $h_dups = $h_total - scalar(keys %http_ok);
note("http sink: $h_total requests for $committed messages ($h_dups duplicates)");

my %delivered = map { split /\|/ } split /\n/,
  $source->safe_psql('postgres', 'SELECT sink, delivered FROM dtx.outbox_status');
is("$delivered{tbl}/$delivered{hooks}", "$committed/$committed",
	'dtx.outbox_status: delivered counts each message once per sink');

# the consumer: every delivery (HTTP in arrival order, duplicates
# included, then the table's rows) applied through dtx.inbox_accept, one
# transaction each; then all of them once more (a redelivery)
$target->safe_psql('consumer', q{
	CREATE EXTENSION pg_dtx;
	CREATE TABLE applied (id bigint PRIMARY KEY, n bigint NOT NULL, times int NOT NULL);
	CREATE FUNCTION consume(m_id bigint, m_n bigint) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
		IF NOT dtx.inbox_accept(m_id::text, 'orders') THEN
			RETURN false;
		END IF;
		INSERT INTO applied VALUES (m_id, m_n, 1)
			ON CONFLICT (id) DO UPDATE SET times = applied.times + 1;
		RETURN true;
	END $$;
});
my $script = join('', map { "SELECT consume($_->[0], $_->[1]);\n" } (@http_deliveries, @table_rows));
my @accepted = split /\n/, $target->safe_psql('consumer', $script);
is(scalar(grep { $_ eq 't' } @accepted), $committed,
	'inbox: of ' . scalar(@accepted) . ' deliveries, one per committed message is accepted');
is($target->safe_psql('consumer', q{SELECT count(*) || '|' || count(*) FILTER (WHERE times = 1) FROM applied}),
	"$committed|$committed", 'inbox: every message applied exactly once');
my $bad_applied = 0;
foreach (split /\n/, $target->safe_psql('consumer', 'SELECT id, n FROM applied'))
{
	my ($id, $n) = split /\|/;
	$bad_applied++ unless exists $produced{$id} && $produced{$id} == $n;
}
is($bad_applied, 0, 'inbox: the applied messages are the committed ones');
@accepted = split /\n/, $target->safe_psql('consumer', join('', map { "SELECT consume($_->[0], $_->[1]);\n" } @table_rows));
is(scalar(grep { $_ eq 't' } @accepted), 0, 'inbox: a redelivery of everything is refused');
is($target->safe_psql('consumer', q{SELECT count(*) FROM dtx.inbox WHERE source = 'orders'}), $committed,
	'inbox: one row per committed message');
is($target->safe_psql('consumer', q{
	BEGIN; SELECT dtx.inbox_accept('x-1', 'rb'); ROLLBACK;
	SELECT dtx.inbox_accept('x-1', 'rb'); SELECT dtx.inbox_accept('x-1', 'rb');}), "t\nt\nf",
	'inbox: an accept rolled back with its transaction did not count');

is($hit_dispatch, 20, 'every crash interrupted a dispatch round');
diag(sprintf('report: 008 crash loop: %d committed messages (%d producer transactions lost to crashes), '
	  . '%d rolled back + %d savepoint + %d failed transactions, 20 crashes (%s) interrupting %d messages in flight, '
	  . '%d HTTP requests (%d duplicates), %.0f s',
	$committed, $pstats{failed}, $pstats{rollback}, $pstats{savepoint}, $pstats{error},
	join(', ', map { "$_ $points{$_}" } sort keys %points), $in_flight_at_crash,
	$h_total, $h_dups, time - $t_start));

# ---------------------------------------------------------------------
# 2. a poison message: its HTTP delivery kills the worker, every time
#
# The endpoint signals a killer process (SIGUSR1) when a request contains
# the poison marker, then holds its answer back; the killer kill -9s the
# worker of the moment and re-arms the endpoint at once (the endpoint fires
# once per arming, and the restarted worker sends the poison right away).
my $t2 = time;
my $limit = 3;
$source->safe_psql('postgres', 'ALTER SYSTEM RESET dtx.outbox_crash_limit; SELECT pg_reload_conf();');
ok($source->poll_query_until('postgres', 'SHOW dtx.outbox_crash_limit', $limit), "poison: crash limit back to the default, $limit");
$source->safe_psql('postgres', q{SELECT dtx.route_create('poison', 'hooks')});

my $marker = 'POISON-' . int(rand(1e9));
my $dboid = $source->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'postgres'});
my $pm_file = $source->data_dir . '/postmaster.pid';
my $kills_file = "$scratch/killer.log";
my $arm = sub {
	my ($pid) = @_;
	http_mode(delay_ms => 300, kill_match => $marker, kill_pid => $pid, kill_signal => POSIX::SIGUSR1());
};

sub worker_pid_in_proc
{
	open(my $fh, '<', $pm_file) or return undef;
	chomp(my $pm = <$fh> // '');
	close($fh);
	opendir(my $dh, '/proc') or return undef;
	foreach my $pid (grep { /^\d+$/ } readdir($dh))
	{
		open(my $st, '<', "/proc/$pid/stat") or next;
		my $stat = <$st> // '';
		close($st);
		my @f = split ' ', substr($stat, rindex($stat, ')') + 2);
		next unless @f > 1 && $f[1] == $pm;
		open(my $cl, '<', "/proc/$pid/cmdline") or next;
		my $cmd = <$cl> // '';
		close($cl);
		return $pid if $cmd =~ /pg_dtx worker for database $dboid\b/;
	}
	return undef;
}

# a poison that is never quarantined stops killing after $max_kills crashes
my $max_kills = 2 * ($limit + 1) + 2;
my $killer = fork();
die "fork: $!" unless defined $killer;
if ($killer == 0)
{
	my $fired = 0;
	my $kills = 0;
	$SIG{USR1} = sub { $fired++ };
	$SIG{TERM} = sub { POSIX::_exit(0) };
	while (1)
	{
		if ($fired)
		{
			$fired = 0;
			my $w = worker_pid_in_proc();
			kill 'KILL', $w if $w;
			$kills++;
			eval { $arm->($$) } if $kills < $max_kills;
			open(my $fh, '>>', $kills_file);
			print $fh ($w // 'none') . ($@ ? " rearm failed: $@" : '') . "\n";
			close($fh);
		}
		usleep(2_000);
	}
}
$children{$killer} = 1;
$arm->($killer);

# in one transaction: messages before the poison, the poison, a message of
# its key behind it, messages after it (all but the poison go to both sinks)
my @q = split /\n/, $source->safe_psql('postgres', qq{
	BEGIN;
	SELECT dtx.outbox_send('orders.q', '{"q": 1}', 'q-a');
	SELECT dtx.outbox_send('orders.q', '{"q": 2}', 'q-b');
	SELECT dtx.outbox_send('orders.q', '{"q": 3}');
	SELECT dtx.outbox_send('poison', '{"q": 4, "marker": "$marker"}', 'q-p');
	SELECT dtx.outbox_send('orders.q', '{"q": 5}', 'q-p');
	SELECT dtx.outbox_send('orders.q', '{"q": 6}', 'q-a');
	SELECT dtx.outbox_send('orders.q', '{"q": 7}');
	COMMIT;});
my $poison = $q[3];
my @normal = @q[ 0 .. 2, 4 .. 6 ];

sub kills
{
	return -e $kills_file ? split(/\n/, slurp_file($kills_file)) : ();
}
my $quarantined = 0;
my $until = time + $PostgreSQL::Test::Utils::timeout_default;
while (time < $until && kills() < $max_kills)
{
	my ($out, $err) = ('', '');
	$source->psql('postgres', "SELECT count(*) FROM dtx.outbox_dead WHERE message_id = $poison",
		stdout => \$out, stderr => \$err);
	if ($out eq '1')
	{
		$quarantined = 1;
		last;
	}
	usleep(100_000);
}
ok($quarantined, 'poison: it ends in dtx.outbox_dead (after ' . scalar(kills()) . ' crashes)');
is($source->safe_psql('postgres', "SELECT sink, reason FROM dtx.outbox_dead WHERE message_id = $poison"),
	'hooks|quarantined', 'poison: quarantined (sink hooks)');
ok($source->poll_query_until('postgres', 'SELECT count(*) = 0 FROM dtx.outbox'), 'poison: the other messages drain');
http_mode();    # disarmed
kill 'TERM', $killer;
waitpid($killer, 0);
delete $children{$killer};

my @kills = kills();
my @poison_requests = grep { $_->{path} eq '/events' && ref $_->{body} eq 'HASH' && $_->{body}{id} == $poison } http_received();
my $unkilled = grep { !$_->{killed} } @poison_requests;
is($unkilled, 0, 'poison: every HTTP request of the poison killed the worker (' . scalar(@poison_requests) . ' requests)');
is(scalar(grep { !/^\d+$/ } @kills), 0, 'poison: the killer found the worker and re-armed each time') or diag(join("\n", @kills));
ok(@kills >= 2 && @kills <= $limit + 1,
	'poison: ' . scalar(@kills) . " crashes (crash limit $limit: at least one solo retry, at most " . ($limit + 1) . ')');
like($source->safe_psql('postgres', "SELECT last_error FROM dtx.outbox_dead WHERE message_id = $poison"),
	qr/the dispatcher died $limit times while sending this message alone/, 'poison: the dead letter says why');

# Only the poison is to blame.  The first crash makes suspects of every
# message of that round, in both sinks; while the poison is retried alone
# in sink hooks, sink tbl sends its own suspects alone in the same rounds,
# and those are delivered (their INSERT commits before the HTTP requests
# go out): a crash during those rounds says nothing against them.
is($source->safe_psql('postgres', "SELECT string_agg(message_id || ' ' || sink || ' ' || reason, ', ') FROM dtx.outbox_dead WHERE message_id <> $poison"),
	'', 'poison: no other message was quarantined with it');
my $in = join(',', @normal);
is($target->safe_psql('sinkdb', "SELECT count(*) FROM events WHERE id IN ($in)"), scalar(@normal),
	'poison: the messages sent with it reached the postgres sink');
my %hq = map { $_->{body}{id} => 1 } grep { $_->{path} eq '/events' && ref $_->{body} eq 'HASH' && $_->{status} && $_->{status} == 200 && !$_->{killed} } http_received();
is(scalar(grep { $hq{$_} } @normal), scalar(@normal), 'poison: ... and the http sink, including the message of its key behind it');
is($target->safe_psql('sinkdb', "SELECT count(*) FROM events WHERE id = $poison"), '0',
	'poison: not routed to the postgres sink, not there');

# healthy: the worker runs, a new message goes through
wait_up('after the quarantine');
my $after = $source->safe_psql('postgres', q{SELECT dtx.outbox_send('orders.after', '{"after": true}', 'q-p')});
ok($target->poll_query_until('sinkdb', "SELECT count(*) FROM events WHERE id = $after", '1'),
	'after the quarantine: a new message of the same key is delivered');
my $status = $source->safe_psql('postgres', q{SELECT dead FROM dtx.outbox_status WHERE sink = 'hooks'});
is($status, '1', 'dtx.outbox_status: one dead letter for sink hooks');
ok(log_wait($source, qr/message $poison for sink "hooks" quarantined in dtx.outbox_dead/, 0, 1),
	'the quarantine is logged');

foreach my $node ($source, $target)
{
	unlike(slurp_file($node->logfile), qr/TRAP:|PANIC|terminated by signal (6|11)/,
		$node->name . ': no assertion failure, PANIC, abort or segfault');
}
diag(sprintf('report: 008 poison: quarantined after %d crashes, %.0f s; total %.0f s',
	scalar(@kills), time - $t2, time - $t_start));

$http_server->signal('TERM');
$http_server->finish;
done_testing();

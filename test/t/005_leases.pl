# Leases and fencing tokens: tokens never go back across 20 crashes
# (immediate shutdown and kill -9 of the postmaster, with acquisitions in
# flight and reservation ranges crossed right before the crash) and across
# crash restarts after a backend is killed; the grace period after a
# restart; a holder frozen with SIGSTOP past its TTL is fenced off; a new
# token range waits for the synchronous standby, and its promotion keeps
# tokens increasing; session leases end with their session (FIFO waiters
# get them in order), other leases outlive it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use DtxTest;

my $RANGE = 8192;    # tokens reserved by one flush

my $t_start = time;

# wal_writer_delay = 10s: the WAL writer does not flush behind the
# extension's back, so a token range that was not flushed before its
# first token was handed out would be lost by the crash that follows.
my $node = dtx_node('leases', conf => "wal_writer_delay = '10s'");
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_dtx;
	-- n acquisitions and releases of lease 'burn'; the tokens, in order
	CREATE FUNCTION burn(n int) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
	DECLARE t bigint;
	BEGIN
		FOR i IN 1..n LOOP
			SELECT token INTO t FROM dtx.lease_acquire('burn', '1 s');
			IF t IS NULL OR NOT dtx.lease_release('burn', t) THEN
				RAISE EXCEPTION 'burn: lease not acquired or not released at %', i;
			END IF;
			RETURN NEXT t;
		END LOOP;
	END $$;
});

# Lines of integers, or die
sub tokens_of
{
	my ($out, $what) = @_;
	my @t = split /\n/, $out;
	foreach (@t)
	{
		die "$what: not a token: '$_'" unless /^\d+$/;
	}
	return @t;
}

# later >= earlier, two timestamps as the server printed them (10 ms of
# slack: expiry is judged on the monotonic clock, these are wall-clock
# readings); 'f' when one is missing
sub not_before
{
	my ($n, $later, $earlier) = @_;
	return 'f' unless $later && $earlier;
	return $n->safe_psql('postgres',
		qq{SELECT '$later'::timestamptz >= '$earlier'::timestamptz - interval '10 ms'});
}

sub status
{
	my ($n, $db) = @_;
	my ($next, $reserved) = split /\|/,
	  $n->safe_psql($db // 'postgres', 'SELECT next_token, reserved_through FROM dtx.lease_status');
	return ($next, $reserved);
}

# ---------------------------------------------------------------------
# 1. 20 crashes, alternately immediate shutdown and kill -9 of the
# postmaster, with acquisitions right before each.  Every token a client
# saw is recorded in the order it was seen; all clients run one after the
# other, so the whole list must be strictly increasing.
my @seen;           # [token, where]
my $max_seen = 0;
my $violations = 0;

sub saw
{
	my ($where, @tokens) = @_;
	foreach my $t (@tokens)
	{
		if ($t <= $max_seen)
		{
			$violations++;
			diag("token $t ($where) is not above the highest token seen before ($max_seen)")
			  if $violations <= 10;
		}
		$max_seen = $t if $t > $max_seen;
		push @seen, [ $t, $where ];
	}
}

# A session that acquires and releases lease 'hammer' n times in one
# statement and reports each token with a NOTICE (sent and flushed at
# once, so the client sees the tokens while the statement runs).  psql
# quits by itself: after the statement, or when it loses its server.
sub start_hammer
{
	my ($n) = @_;
	my $bg = $node->background_psql('postgres', on_error_stop => 1);
	$bg->{stdin} .= qq{DO \$\$
		DECLARE t bigint;
		BEGIN
			FOR i IN 1..$n LOOP
				SELECT token INTO t FROM dtx.lease_acquire('hammer', '1 s');
				RAISE NOTICE 'tok %', t;
				PERFORM dtx.lease_release('hammer', t);
			END LOOP;
		END \$\$;
\\q
};
	$bg->{run}->pump_nb();
	return $bg;
}

# pump until the hammer has reported at least n tokens
sub hammer_until
{
	my ($bg, $n) = @_;
	while (1)
	{
		my $got = () = $bg->{stderr} =~ /NOTICE:\s+tok \d+\n/g;
		return $got if $got >= $n;
		die "hammer: $bg->{stderr}" if $bg->{stderr} =~ /ERROR|FATAL/;
		die "hammer ended after $got tokens" unless $bg->{run}->pumpable;
		die "hammer timed out" if $bg->{timeout}->is_expired;
		$bg->{run}->pump();
	}
}

# the tokens the hammer printed, once psql has exited
sub hammer_tokens
{
	my ($bg) = @_;
	eval { $bg->{run}->finish; };    # reads psql's output to the end
	my @lines = $bg->{stderr} =~ /NOTICE:\s+tok (\S+)\n/g;
	my @bad = grep { !/^\d+$/ } @lines;
	is(scalar(@bad), 0, 'hammer: every acquisition got a token') if @bad;
	return grep { /^\d+$/ } @lines;
}

my %crash_count = (immediate => 0, kill9 => 0);
my $hammered_before_crash = 0;
my $boundary_crashes = 0;
my $reserved_before = 0;    # reserved_through read last before the crash
my $t1 = time;

for my $round (1 .. 20)
{
	my $mode = $round % 2 ? 'immediate' : 'kill9';

	# first acquisition after the (re)start: waits out the grace period
	my $first = $node->safe_psql('postgres', q{
		SELECT a.token FROM dtx.lease_acquire('first', '1 s', wait => '10 s') a
		 WHERE dtx.lease_release('first', a.token)});
	like($first, qr/^\d+$/, "round $round: a token after the (re)start (within the grace period's wait)");
	if ($round > 1)
	{
		ok($first > $max_seen && $first > $reserved_before,
			"round $round: first token after the crash ($first) above every token seen ($max_seen) and above the range reserved before the crash ($reserved_before)");
	}
	saw("round $round first", $first);

	my $bg;
	if ($round % 3 == 2)
	{
		# use the reserved range up to its end and take the first token of
		# the next range, then crash at once
		my ($next, $reserved) = status($node);
		my @t = tokens_of($node->safe_psql('postgres', 'SELECT burn(' . ($reserved - $next + 2) . ')'), 'burn');
		saw("round $round burn", @t);
		is($t[-1], $reserved + 1, "round $round: the burst took the first token of a new range (" . ($reserved + 1) . ')');
		($next, $reserved_before) = status($node);
		ok($reserved_before >= $t[-1] + $RANGE - 1, "round $round: the new range is reserved through $reserved_before");
		$boundary_crashes++;
	}
	else
	{
		# a few acquisitions in their own statements, then a session
		# acquiring continuously while the server crashes; every third
		# round it runs through a range boundary before the crash
		for my $i (1 .. 5)
		{
			saw("round $round single",
				$node->safe_psql('postgres', qq{
					SELECT a.token FROM dtx.lease_acquire('single$i', '1 s') a
					 WHERE dtx.lease_release('single$i', a.token)}));
		}
		(undef, $reserved_before) = status($node);
		my $need = $round % 3 == 0 ? $RANGE + 1000 : 500;
		$bg = start_hammer($need + 20000);
		hammer_until($bg, $need);
		$hammered_before_crash++;
	}

	if ($mode eq 'immediate')
	{
		$node->stop('immediate');
	}
	else
	{
		kill9_postmaster($node);
	}
	$crash_count{$mode}++;
	if ($bg)
	{
		my @h = hammer_tokens($bg);
		ok(@h >= ($round % 3 == 0 ? $RANGE + 1000 : 500), "round $round: the hammer saw " . scalar(@h) . " tokens, up to the $mode crash");
		saw("round $round hammer", @h);
	}
	$node->start;
}
my $crash_secs = time - $t1;

# kill -9 of a backend: the postmaster reinitialises shared memory
# (restart_after_crash), the counter reloads from the table
my $reserved = $reserved_before;
for my $round (1 .. 3)
{
	my $after = $round == 1 ? 'the last restart' : 'crash restart ' . ($round - 1);
	my $first = $node->safe_psql('postgres', q{
		SELECT a.token FROM dtx.lease_acquire('first', '1 s', wait => '10 s') a
		 WHERE dtx.lease_release('first', a.token)});
	ok($first =~ /^\d+$/ && $first > $max_seen && $first > $reserved,
		"backend kill -9: first token after $after ($first) above every token seen ($max_seen) and the range reserved before ($reserved)");
	saw("after $after", $first);

	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	my @t = tokens_of($bg->query_safe('SELECT burn(100)'), 'burn');
	saw("backend kill $round", @t);
	(undef, $reserved) = status($node);
	my $off = -s $node->logfile;
	kill 'KILL', $pid;
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $off);
	eval { $bg->quit; };
	$node->poll_query_until('postgres', 'SELECT true', 't');
}
my $last = $node->safe_psql('postgres', q{
	SELECT a.token FROM dtx.lease_acquire('first', '1 s', wait => '10 s') a
	 WHERE dtx.lease_release('first', a.token)});
ok($last =~ /^\d+$/ && $last > $max_seen && $last > $reserved,
	"backend kill -9: first token after crash restart 3 ($last) above every token seen ($max_seen) and the range reserved before ($reserved)");
saw('after crash restart 3', $last);

my %distinct = map { $_->[0] => 1 } @seen;
is(scalar(keys %distinct), scalar(@seen), 'no token was seen twice over all crashes (' . scalar(@seen) . ' tokens)');
is($violations, 0, 'every token seen is above all the tokens seen before it, across all crashes');
is($crash_count{immediate} . '/' . $crash_count{kill9}, '10/10', '10 immediate shutdowns and 10 kill -9 of the postmaster');
diag(sprintf('report: %d tokens seen over 20 crashes + 3 backend kills (%d with a session acquiring at the crash, %d right after a range boundary), highest %d, %.0f s',
	scalar(@seen), $hammered_before_crash, $boundary_crashes, $max_seen, $crash_secs));

# ---------------------------------------------------------------------
# 2. the grace period after a restart: nobody gets a lease until the
# leases granted before the crash have expired
$node->safe_psql('postgres', 'CREATE DATABASE gdb');
$node->safe_psql('gdb', 'CREATE EXTENSION pg_dtx');
my ($g1, $g1_exp) = split /\|/, $node->safe_psql('gdb',
	q{SELECT token, expires_at FROM dtx.lease_acquire('g', '5 s')});
like($g1, qr/^\d+$/, 'grace: lease g acquired before the crash');
my (undef, $g_reserved) = status($node, 'gdb');
$node->stop('immediate');
$node->start;

my $now_out = $node->safe_psql('gdb', q{
	SELECT (SELECT token IS NULL FROM dtx.lease_acquire('g', '5 s')) || '|' ||
	       (SELECT token IS NULL FROM dtx.lease_acquire('g-other', '1 s'))});
is($now_out, 'true|true', 'grace: right after the restart, lease g and any other lease of that database are refused (wait 0: NULL)');
my $grace = $node->safe_psql('gdb', qq{
	SELECT grace_until > clock_timestamp(),
	       grace_until >= '$g1_exp'::timestamptz,
	       grace_until <= coalesce((SELECT backend_start FROM pg_stat_activity
	                                 WHERE backend_type = 'pg_dtx launcher'),
	                               pg_postmaster_start_time()) + interval '5 s' + interval '2 s',
	       grace_until
	  FROM dtx.lease_status});
my ($g_future, $g_covers, $g_bounded, $g_until) = split /\|/, $grace;
is($g_future, 't', "grace: lease_status.grace_until ($g_until) is in the future");
is($g_covers, 't', "grace: it is not before the pre-crash lease expires ($g1_exp)");
is($g_bounded, 't', 'grace: it is at most the restart (the launcher\'s start) + the longest TTL (5 s, + 2 s slack)');
# another database that never granted a long lease is not held up as long
my $pg_grace = $node->safe_psql('postgres',
	q{SELECT coalesce(grace_until <= pg_postmaster_start_time() + interval '3 s', true) FROM dtx.lease_status});
is($pg_grace, 't', 'grace: per database (the database with 1 s leases has a grace of ~1 s at most)');

my ($g2, $g2_at) = split /\|/, $node->safe_psql('gdb', q{
	SELECT a.token, clock_timestamp() FROM dtx.lease_acquire('g', '5 s', wait => '20 s') a});
like($g2, qr/^\d+$/, 'grace: acquire with a wait gets the lease');
ok($g2 > $g1 && $g2 > $g_reserved, "grace: its token ($g2) is above the one before the crash ($g1) and the range reserved then ($g_reserved)");
is(not_before($node, $g2_at, $g_until), 't',
	"grace: granted at $g2_at, not before grace_until");

# ---------------------------------------------------------------------
# 3. a holder frozen (SIGSTOP of its backend) past its TTL: the lease goes
# to another client, and the frozen one's late write is rejected
$node->safe_psql('postgres', q{
	CREATE TABLE acct (id int PRIMARY KEY, balance int, fence_token bigint);
	SELECT dtx.fence_table('acct');
	-- rule holder, the lease named by the row's resource column
	CREATE TABLE jobs (name text PRIMARY KEY, state text, fence_token bigint);
	SELECT dtx.fence_table('jobs', resource_column => 'name', rule => 'holder');
});
my $ha = $node->background_psql('postgres', on_error_stop => 0);
$ha->query_safe('\set VERBOSITY verbose');
my $a_pid = $ha->query_safe('SELECT pg_backend_pid()');
my ($T1, $T1_exp) = split /\|/, $ha->query_safe(
	q{SELECT token, expires_at FROM dtx.lease_acquire('acct-writer', '2 s', wait => '10 s')});
like($T1, qr/^\d+$/, "frozen holder: A holds acct-writer with token $T1");
$ha->query_safe("INSERT INTO acct VALUES (1, 100, $T1)");
$ha->query_safe("INSERT INTO jobs VALUES ('acct-writer', 'A', $T1)");

# A's backend freezes (a GC pause of the holder); A's next writes are
# already on their way
kill 'STOP', $a_pid;
$ha->{stderr} = '';
$ha->{stdin} .= "UPDATE jobs SET state = 'A late', fence_token = $T1 WHERE name = 'acct-writer';\n"
  . "BEGIN;\nSET LOCAL dtx.fencing_token = $T1;\nUPDATE acct SET balance = balance - 60 WHERE id = 1;\nCOMMIT;\n"
  . "SELECT dtx.lease_renew('acct-writer', $T1, '2 s');\n\\echo A_DONE\n";
$ha->{run}->pump_nb();

# B waits for the lease: it gets it when A's TTL runs out
my ($T2, $T2_at) = split /\|/, $node->safe_psql('postgres', q{
	SELECT a.token, clock_timestamp() FROM dtx.lease_acquire('acct-writer', '2 s', wait => '10 s') a});
like($T2, qr/^\d+$/, "frozen holder: B got the lease (token $T2)");
ok($T2 > $T1, "frozen holder: B's token $T2 is above A's $T1");
is(not_before($node, $T2_at, $T1_exp), 't',
	'frozen holder: B got it only once A\'s lease had expired');
$node->safe_psql('postgres', "UPDATE acct SET balance = 200, fence_token = $T2 WHERE id = 1");
$node->safe_psql('postgres', "UPDATE jobs SET state = 'B', fence_token = $T2 WHERE name = 'acct-writer'");

kill 'CONT', $a_pid;
$ha->{run}->pump() until $ha->{stdout} =~ /A_DONE/ || !$ha->{run}->pumpable || $ha->{timeout}->is_expired;
my @a_errors = $ha->{stderr} =~ /ERROR:\s+(\w{5}):\s+(.*)/g;
my @states = @a_errors[ grep { $_ % 2 == 0 } 0 .. $#a_errors ];
is(join(',', @states), 'DX010,DX010,DX011', 'frozen holder: A\'s two late writes fail with DX010, its renewal with DX011');
like($ha->{stderr}, qr/fencing token $T1 does not hold lease "acct-writer" for table jobs.*\n.*DETAIL:\s+The lease is held with token $T2\./,
	'frozen holder, rule holder: the error names both tokens');
# (the default resource is the table name as fence_table() printed it)
like($ha->{stderr}, qr/fencing token $T1 is stale for resource "[^"]*acct" of table acct: token $T2 has been used/,
	'frozen holder, rule monotonic: the error names both tokens');
like($ha->{stderr}, qr/lease "acct-writer" is not held with token $T1\n.*DETAIL:\s+It is held with token $T2\./,
	'frozen holder: A learns that it lost the lease');
is($node->safe_psql('postgres', 'SELECT balance, fence_token FROM acct WHERE id = 1'), "200|$T2",
	'frozen holder: the row holds B\'s write');
is($node->safe_psql('postgres', q{SELECT state, fence_token FROM jobs WHERE name = 'acct-writer'}), "B|$T2",
	'frozen holder: the holder-rule row holds B\'s write');
is($node->safe_psql('postgres', q{SELECT token FROM dtx.fence_marks WHERE relid = 'acct'::regclass}), $T2,
	'frozen holder: the fence mark is B\'s token');
$ha->quit;

# once B's lease has expired, the holder rule rejects B's token too
$node->safe_psql('postgres', qq{SELECT pg_sleep(greatest(0, extract(epoch FROM (expires_at - clock_timestamp())) + 0.2))
	FROM dtx.leases WHERE name = 'acct-writer'});
my ($st, $msg, $err) = psql_error($node, "UPDATE jobs SET state = 'B late', fence_token = $T2 WHERE name = 'acct-writer'");
is($st, 'DX010', 'rule holder: a write with an expired lease\'s token is rejected');
like($err, qr/DETAIL:\s+The lease held with token $T2 has expired\./, 'rule holder: the error says the lease expired');
# the monotonic rule still accepts the highest token
$node->safe_psql('postgres', "UPDATE acct SET balance = 210, fence_token = $T2 WHERE id = 1");
is($node->safe_psql('postgres', 'SELECT balance FROM acct WHERE id = 1'), '210', 'rule monotonic: the highest token still writes');

# ---------------------------------------------------------------------
# 4. promotion of a synchronous standby
my $primary = dtx_node('primary', allows_streaming => 1, conf => "wal_writer_delay = '10s'");
$primary->safe_psql('postgres', 'CREATE EXTENSION pg_dtx');
$primary->safe_psql('postgres', $node->safe_psql('postgres',
	q{SELECT pg_get_functiondef('burn(int)'::regprocedure)}));
$primary->backup('bk');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'bk', has_streaming => 1);
$standby->start;
$primary->safe_psql('postgres', q{ALTER SYSTEM SET synchronous_standby_names = '*'});
$primary->reload;
ok($primary->poll_query_until('postgres', q{SELECT sync_state = 'sync' FROM pg_stat_replication}),
	'promotion: the standby is synchronous');

my @old;
push @old, tokens_of($primary->safe_psql('postgres', 'SELECT burn(500)'), 'burn');
my ($p_next, $p_reserved) = status($primary);

# while the synchronous standby cannot confirm (its WAL receiver frozen),
# no token of a new range is handed out
my $walrcv = $standby->safe_psql('postgres', 'SELECT pid FROM pg_stat_wal_receiver');
like($walrcv, qr/^\d+$/, 'promotion: the standby has a WAL receiver');
kill 'STOP', $walrcv;
($st, $msg, $err) = psql_error($primary, "SET statement_timeout = '3s'; SELECT burn(" . ($p_reserved - $p_next + 2) . ')');
kill 'CONT', $walrcv;
is($st, '57014', 'promotion: with the standby unable to confirm, crossing into a new range waits (cancelled by statement_timeout)');
like($msg, qr/synchronous standbys to confirm a fencing token reservation/, "promotion: ... waiting for the standby's confirmation");
is($primary->safe_psql('postgres', "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"), '1',
	'promotion: the standby is back');
($p_next, $p_reserved) = status($primary);
push @old, tokens_of($primary->safe_psql('postgres', 'SELECT burn(' . ($p_reserved - $p_next + 2) . ')'), 'burn');
is($old[-1], $p_reserved + 1, "promotion: the primary crossed into a new range (token $old[-1])");
my ($pl, $pl_exp) = split /\|/, $primary->safe_psql('postgres',
	q{SELECT token, expires_at FROM dtx.lease_acquire('pl', '6 s')});
push @old, $pl;
my (undef, $old_reserved) = status($primary);
my $old_max = (sort { $b <=> $a } @old)[0];
is($pl, $old_max, "promotion: lease pl held on the primary with token $pl, the highest");

($st, $msg) = psql_error($standby, q{SELECT * FROM dtx.lease_acquire('pl', '1 s')});
is($st, '25006', "promotion: acquire on the standby is refused with 25006 ($msg)");
($st) = psql_error($standby, q{SELECT * FROM dtx.lease_acquire('pl', '1 s', wait => '5 s')});
is($st, '25006', 'promotion: also with a wait');
ok($standby->poll_query_until('postgres', "SELECT reserved >= $old_reserved FROM dtx.lease_tokens"),
	'promotion: the standby replayed the reservation');

$primary->stop('immediate');
$standby->promote;
my $p_grace = $standby->safe_psql('postgres', qq{
	SELECT grace_until IS NOT NULL AND grace_until >= '$pl_exp'::timestamptz FROM dtx.lease_status});
is($p_grace, 't', 'promotion: the new primary has a grace period covering the lease held on the old one');
is($standby->safe_psql('postgres', q{SELECT token IS NULL FROM dtx.lease_acquire('pl', '6 s')}), 't',
	'promotion: during the grace period lease pl is not granted');
my ($np, $np_at) = split /\|/, $standby->safe_psql('postgres', q{
	SELECT a.token, clock_timestamp() FROM dtx.lease_acquire('pl', '6 s', wait => '20 s') a});
like($np, qr/^\d+$/, 'promotion: the new primary grants lease pl after the grace period');
ok($np > $old_max && $np > $old_reserved,
	"promotion: its token ($np) is above every token of the old primary ($old_max) and its reserved range ($old_reserved)");
is(not_before($standby, $np_at, $pl_exp), 't',
	'promotion: not before the old holder\'s lease expired');
my @new = tokens_of($standby->safe_psql('postgres', 'SELECT burn(100)'), 'burn');
is(scalar(grep { $_ <= $old_max } @new), 0, 'promotion: later tokens of the new primary are above the old ones too');

# ---------------------------------------------------------------------
# 5. session leases end with the session; others outlive it
my $s = $node->background_psql('postgres');
my ($S1, $S1_exp) = split /\|/, $s->query_safe(
	q{SELECT token, expires_at FROM dtx.lease_acquire('sess', '30 s', wait => '10 s', session => true)});
like($S1, qr/^\d+$/, "session lease: acquired with token $S1 (TTL 30 s)");
# two waiters queue in order
my @w;
for my $i (1 .. 2)
{
	my $b = $node->background_psql('postgres');
	$b->{stdin} .= qq{SELECT token || '|' || clock_timestamp() FROM dtx.lease_acquire('sess', '30 s', wait => '25 s', holder => 'W$i');\n\\echo W_DONE\n};
	$b->{run}->pump_nb();
	ok($node->poll_query_until('postgres', "SELECT waiters = $i FROM dtx.leases WHERE name = 'sess'"),
		"session lease: waiter W$i queued");
	push @w, $b;
}
$s->quit;    # the session ends: its lease goes to the first waiter
my $w1 = $w[0];
$w1->{run}->pump() until $w1->{stdout} =~ /W_DONE/ || !$w1->{run}->pumpable || $w1->{timeout}->is_expired;
my ($W1, $W1_at) = $w1->{stdout} =~ /^(\d+)\|(.*)$/m;
ok(defined $W1 && $W1 > $S1, "session lease: the first waiter got it (token " . ($W1 // 'none') . ") when the session ended");
is($W1_at ? $node->safe_psql('postgres', qq{SELECT '$W1_at'::timestamptz < '$S1_exp'::timestamptz - interval '10 s'}) : 'f', 't',
	'session lease: well before its TTL');
is($node->safe_psql('postgres', q{SELECT holder || '|' || waiters FROM dtx.leases WHERE name = 'sess'}), 'W1|1',
	'session lease: held by W1, W2 still waiting');
$w1->query_safe(qq{SELECT dtx.lease_release('sess', $W1)});
my $w2 = $w[1];
$w2->{run}->pump() until $w2->{stdout} =~ /W_DONE/ || !$w2->{run}->pumpable || $w2->{timeout}->is_expired;
my ($W2) = $w2->{stdout} =~ /^(\d+)\|/m;
ok(defined $W2 && $W2 > $W1, 'session lease: then the second waiter, in FIFO order (token ' . ($W2 // 'none') . ')');
$w2->query_safe(qq{SELECT dtx.lease_release('sess', $W2)});
$_->quit for @w;

# a session lease is released when its backend is terminated, too
$s = $node->background_psql('postgres', on_error_stop => 0);
my $s_pid = $s->query_safe('SELECT pg_backend_pid()');
$s->query_safe(q{SELECT token FROM dtx.lease_acquire('sess2', '30 s', session => true)});
$node->safe_psql('postgres', "SELECT pg_terminate_backend($s_pid, 10000)");
eval { $s->quit; };
like($node->safe_psql('postgres', q{SELECT token FROM dtx.lease_acquire('sess2', '1 s', wait => '10 s')}),
	qr/^\d+$/, 'session lease: released when its backend is terminated');

# a lease without session => true is still held after the disconnect
my ($N1, $N1_exp) = split /\|/, $node->safe_psql('postgres',
	q{SELECT token, expires_at FROM dtx.lease_acquire('nosess', '4 s')});
is($node->safe_psql('postgres', q{SELECT state || '|' || token FROM dtx.leases WHERE name = 'nosess'}), "held|$N1",
	'non-session lease: still held after its session ended');
is($node->safe_psql('postgres', q{SELECT token IS NULL FROM dtx.lease_acquire('nosess', '4 s')}), 't',
	'non-session lease: another session cannot take it');
my ($N2, $N2_at) = split /\|/, $node->safe_psql('postgres', q{
	SELECT a.token, clock_timestamp() FROM dtx.lease_acquire('nosess', '4 s', wait => '10 s') a});
ok($N2 > $N1, "non-session lease: taken over after its TTL (token $N2)");
is(not_before($node, $N2_at, $N1_exp), 't',
	'non-session lease: not before it expired');

unlike(slurp_file($node->logfile), qr/TRAP:|PANIC|terminated by signal 11/, 'no assertion failure, PANIC or segfault');
diag(sprintf('report: 005_leases ran in %.0f s', time - $t_start));

done_testing();

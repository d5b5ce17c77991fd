# Lease waiters: first come, first served; a release or an expiry wakes
# the next waiter only (no thundering herd); a waiter that gives up or is
# cancelled leaves the queue without disturbing the others.
#
# (Lease waits sleep on a latch, which pg_isolation_regress cannot see as a
# wait, so these concurrency checks live here rather than in test/specs.)
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use DtxTest;

my $node = dtx_node('queue');
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_dtx;
	CREATE TABLE log (n serial, who text, token bigint, at timestamptz);
});

# a waiter: psql that acquires 'q' (waiting up to $wait), logs, holds the
# lease for $hold seconds, releases
sub start_waiter
{
	my ($who, %o) = @_;
	my $wait = $o{wait} // '60 s';
	my $ttl = $o{ttl} // '60 s';
	my $hold = $o{hold} // 0.2;
	my ($out, $err) = ('', '');
	my $sql = qq{
		INSERT INTO log (who, token, at)
		  SELECT '$who', token, clock_timestamp()
		    FROM dtx.lease_acquire('q', '$ttl', wait => '$wait', holder => '$who');
		SELECT pg_sleep($hold);
		SELECT dtx.lease_release('q', token) FROM log WHERE who = '$who';
	};
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $sql ],
		'>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err, who => $who };
}

sub waiters
{
	return $node->safe_psql('postgres',
		"SELECT coalesce(sum(waiters), 0) FROM dtx.leases WHERE name = 'q'");
}

sub wait_for_waiters
{
	my ($n) = @_;
	$node->poll_query_until('postgres',
		"SELECT coalesce(sum(waiters), 0) = $n FROM dtx.leases WHERE name = 'q'")
	  or die "never saw $n waiters";
	return;
}

sub wakeups
{
	return $node->safe_psql('postgres', 'SELECT waiter_wakeups FROM dtx.lease_status');
}

# -- FIFO, one wake per release --------------------------------------------
my $held = $node->safe_psql('postgres',
	"SELECT token FROM dtx.lease_acquire('q', '5 min', holder => 'first')");
ok($held > 0, 'first holder got the lease');

my @w;
foreach my $i (1 .. 5)
{
	push @w, start_waiter("w$i");
	wait_for_waiters($i);    # queued in this order
}
my $before = wakeups();
is($node->safe_psql('postgres', "SELECT dtx.lease_release('q', $held)"), 't',
	'first holder releases');
$_->{h}->finish foreach @w;
foreach (@w)
{
	is(${ $_->{err} }, '', "$_->{who} ran without error");
}
my $after = wakeups();

is($node->safe_psql('postgres', "SELECT string_agg(who, ' ' ORDER BY n) FROM log"),
	'w1 w2 w3 w4 w5', 'waiters were served in the order they came');
is($node->safe_psql('postgres',
		"SELECT bool_and(token > $held) AND count(DISTINCT token) = 5 FROM log"),
	't', 'every waiter got its own token, above the first holder\'s');
is($node->safe_psql('postgres',
		"SELECT string_agg(who, ' ' ORDER BY token) FROM log"),
	'w1 w2 w3 w4 w5', 'tokens increase in grant order');
# A herd would wake every remaining waiter at every release:
# 5 + 4 + 3 + 2 + 1 = 15.  One wake per handoff is 5.
cmp_ok($after - $before, '<=', 6,
	"waiters woke up " . ($after - $before) . " times for 5 handoffs");
is(waiters(), '0', 'no waiter left');

# -- expiry hands the lease to the next waiter --------------------------------
$node->safe_psql('postgres', 'TRUNCATE log');
my $exp = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM expires_at) FROM dtx.lease_acquire('q', '3 s', holder => 'sleeper')");
my $e1 = start_waiter('e1', wait => '30 s', hold => 0);
# queued (or, on a very slow machine, served already)
$node->poll_query_until('postgres', q{
	SELECT EXISTS (SELECT FROM dtx.leases WHERE name = 'q' AND waiters = 1)
	    OR EXISTS (SELECT FROM log WHERE who = 'e1')})
  or die 'waiter e1 never queued';
$before = wakeups();
$e1->{h}->finish;
is(${ $e1->{err} }, '', 'waiter for an expiring lease ran without error');
my $got = $node->safe_psql('postgres', "SELECT extract(epoch FROM at) FROM log WHERE who = 'e1'");
cmp_ok($got, '>=', $exp, 'the waiter got the lease once it expired, not before');
cmp_ok($got - $exp, '<', 5, 'and soon after it expired');
cmp_ok(wakeups() - $before, '<=', 2, 'expiry woke the waiter, about once');

# -- a waiter that gives up leaves the queue; the next one is served ----------
$node->safe_psql('postgres', 'TRUNCATE log');
$held = $node->safe_psql('postgres',
	"SELECT token FROM dtx.lease_acquire('q', '5 min', holder => 'holder')");
my $quitter = start_waiter('quitter', wait => '4 s');
wait_for_waiters(1);
my $patient = start_waiter('patient', wait => '60 s');
$quitter->{h}->finish;
is($node->safe_psql('postgres', "SELECT count(*) FROM log WHERE who = 'quitter' AND token IS NOT NULL"),
	'0', 'the waiter whose wait ran out got nothing');
wait_for_waiters(1);
$node->safe_psql('postgres', "SELECT dtx.lease_release('q', $held)");
$patient->{h}->finish;
is($node->safe_psql('postgres', "SELECT count(*) FROM log WHERE who = 'patient' AND token > $held"),
	'1', 'the waiter behind it got the lease at the release');

# -- a cancelled waiter (statement_timeout, pg_cancel_backend) leaves cleanly --
$node->safe_psql('postgres', 'TRUNCATE log');
$held = $node->safe_psql('postgres',
	"SELECT token FROM dtx.lease_acquire('q', '5 min', holder => 'holder')");
my $victim = start_waiter('victim', wait => '60 s');
wait_for_waiters(1);
my $next = start_waiter('next', wait => '60 s');
wait_for_waiters(2);
$node->safe_psql('postgres', q{
	SELECT pg_cancel_backend(pid) FROM pg_stat_activity
	 WHERE query LIKE '%''victim''%' AND pid <> pg_backend_pid()
});
$victim->{h}->finish;
like(${ $victim->{err} }, qr/canceling statement due to user request/, 'the cancelled waiter got 57014');
wait_for_waiters(1);
$node->safe_psql('postgres', "SELECT dtx.lease_release('q', $held)");
$next->{h}->finish;
is($node->safe_psql('postgres', "SELECT string_agg(who, ' ') FROM log WHERE token IS NOT NULL"),
	'next', 'the waiter behind the cancelled one got the lease');

# -- a waiter terminated (FATAL) while it is being granted the lease ----------
# pg_terminate_backend of the head waiter right after the release: the grant
# passes on to the next waiter, nothing is lost.
$node->safe_psql('postgres', 'TRUNCATE log');
$held = $node->safe_psql('postgres',
	"SELECT token FROM dtx.lease_acquire('q', '5 min', holder => 'holder')");
my $doomed = start_waiter('doomed', wait => '60 s', ttl => '2 s', hold => 30);
wait_for_waiters(1);
my $heir = start_waiter('heir', wait => '60 s');
wait_for_waiters(2);
$node->safe_psql('postgres', qq{
	SELECT dtx.lease_release('q', $held);
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	 WHERE query LIKE '%''doomed''%' AND pid <> pg_backend_pid();
});
$doomed->{h}->finish;
$heir->{h}->finish;
is(${ $heir->{err} }, '', 'the next waiter ran without error');
is($node->safe_psql('postgres', "SELECT count(*) FROM log WHERE who = 'heir' AND token > $held"),
	'1', 'the next waiter got the lease after the terminated one');
is($node->safe_psql('postgres', "SELECT count(*) FROM dtx.leases WHERE name = 'q'"),
	'0', 'nothing is left held or queued');

# -- a grantee that never takes its grant up (frozen) -------------------------
# The grant lapses after the grantee's TTL and the next waiter gets the
# lease (the launcher's watchdog wakes it), instead of sleeping until its
# own deadline.
$node->safe_psql('postgres', 'TRUNCATE log');
$held = $node->safe_psql('postgres',
	"SELECT token FROM dtx.lease_acquire('q', '5 min', holder => 'holder')");
my $frozen = start_waiter('frozen', wait => '60 s', ttl => '2 s');
wait_for_waiters(1);
my $frozen_pid = $node->safe_psql('postgres', q{
	SELECT pid FROM pg_stat_activity WHERE query LIKE '%''frozen''%' AND pid <> pg_backend_pid()});
my $behind = start_waiter('behind', wait => '60 s');
wait_for_waiters(2);
kill 'STOP', $frozen_pid;
my $t0 = time;
$node->safe_psql('postgres', "SELECT dtx.lease_release('q', $held)");
$behind->{h}->finish;
my $took = time - $t0;
kill 'CONT', $frozen_pid;
$frozen->{h}->finish;
is(${ $behind->{err} }, '', 'the waiter behind a frozen grantee ran without error');
is($node->safe_psql('postgres', "SELECT count(*) FROM log WHERE who = 'behind' AND token > $held"),
	'1', 'it got the lease once the frozen grantee\'s grant lapsed');
cmp_ok($took, '<', 30, "and soon ($took s), not at the end of its 60 s wait");
is(${ $frozen->{err} }, '', 'the thawed grantee queued again and ran without error');
is($node->safe_psql('postgres', "SELECT string_agg(who, ' ' ORDER BY token) FROM log"),
	'behind frozen', 'then the thawed grantee got it, with a higher token');

# -- pg_dump and restore keep the token counter and the fence marks -----------
$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', q{
	CREATE EXTENSION pg_dtx;
	CREATE TABLE acct (id int PRIMARY KEY, balance int, fence_token bigint);
	SELECT dtx.fence_table('acct');
});
my $last = $node->safe_psql('src', q{
	SELECT max(t) FROM (SELECT (dtx.lease_acquire('d' || g, '1 s')).token AS t
	                      FROM generate_series(1, 10) g) x});
$node->safe_psql('src', "INSERT INTO acct VALUES (1, 10, $last)");
$node->safe_psql('postgres', 'CREATE DATABASE dst');
my $dump = $node->basedir . '/src.sql';
$node->command_ok([ 'pg_dump', '-d', $node->connstr('src'), '-f', $dump ], 'pg_dump of a database with leases and a fenced table');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('dst'), '-f', $dump ],
	'restored into another database');
# (the restored horizon brings a grace period of up to 1 s: wait for it)
my $first = $node->safe_psql('dst',
	"SELECT token FROM dtx.lease_acquire('after-restore', '1 min', wait => '30 s')");
cmp_ok($first, '>', $last, "tokens continue above the dumped ones after a restore ($first > $last)");
is($node->safe_psql('dst', q{SELECT relid::text || ' ' || resource FROM dtx.fence_marks}),
	'acct public.acct', 'the fence mark follows the restored table');
my ($code) = psql_error($node, 'UPDATE acct SET balance = 0, fence_token = ' . ($last - 1), db => 'dst');
is($code, 'DX010', 'and still rejects a stale token');

$node->stop;
done_testing();

# A participant with unresolved global transactions cannot be dropped.
#
# A global transaction decided commit, with phase 2 left to recovery
# (dtx.fault_point = after_local_commit), prepared on three servers: pa (of
# wrapper pg_dtx), pb (of a wrapper named postgres_fdw, made without the
# extension so that it can be dropped) and pc (owned by another role).
# Every way of dropping one of them is refused with 55006 while the
# decision is unresolved: DROP SERVER ... CASCADE, DROP FOREIGN DATA WRAPPER
# ... CASCADE, DROP OWNED BY ... CASCADE, and DROP EXTENSION pg_dtx CASCADE
# (refused at dtx.decisions, which it would drop first); the
# prepared transactions stay, dtx.in_doubt still lists them.  After
# dtx.recover() the same drops succeed.  Then the two races with a
# coordinator that is committing, which a lock on the server closes: a DROP
# that comes while a transaction is prepared but not yet decided waits for
# it and is then refused; a transaction that commits while a DROP of its
# server is not yet committed waits for it and fails (42704), preparing
# nothing.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use DtxTest;

# automatic recovery off: the test decides when in-doubt work is resolved
my $coord = dtx_node('coord', conf => 'dtx.recovery_interval = 0');
my $part = dtx_node('part');

for my $db (qw(a b c))
{
	$part->safe_psql('postgres', "CREATE DATABASE $db");
	$part->safe_psql($db, 'CREATE TABLE t (id int PRIMARY KEY)');
}
$coord->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
add_participant($coord, 'pa', $part, 'a');
add_participant($coord, 'pc', $part, 'c');
my ($host, $port) = ($part->host, $part->port);
$coord->safe_psql('postgres', qq{
	CREATE FOREIGN DATA WRAPPER postgres_fdw;
	CREATE SERVER pb FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '$host', port '$port', dbname 'b');
	CREATE USER MAPPING FOR CURRENT_USER SERVER pb;
	CREATE ROLE dtx_owner;
	ALTER SERVER pc OWNER TO dtx_owner;
});

sub prepared
{
	return $part->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts');
}

sub servers
{
	return $coord->safe_psql('postgres', q{SELECT string_agg(srvname, ',' ORDER BY srvname) FROM pg_foreign_server});
}

# A background psql session, and a statement sent to it without waiting
# (bg_finish waits for it and returns stdout and stderr).
sub bg_session
{
	my $bg = $coord->background_psql('postgres', on_error_stop => 0);
	$bg->query_safe('\set VERBOSITY verbose');
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	return ($bg, $pid);
}

my $marker_seq = 0;

sub bg_start
{
	my ($bg, $sql) = @_;
	my $marker = 'drop-test-done-' . ++$marker_seq;
	$bg->{stdout} = '';
	$bg->{stderr} = '';
	$bg->{timeout}->start();
	$bg->{stdin} .= "$sql\n;\n\\echo '$marker'\n\\warn '$marker'\n";
	$bg->{run}->pump_nb();
	return $marker;
}

sub bg_finish
{
	my ($bg, $marker) = @_;
	my $re = qr/$marker\r?\n/;
	$bg->{run}->pump()
	  until ($bg->{stdout} =~ $re && $bg->{stderr} =~ $re)
	  || !$bg->{run}->pumpable
	  || $bg->{timeout}->is_expired;
	die "bg_finish: timed out waiting for $marker" if $bg->{timeout}->is_expired;
	my ($out, $err) = ($bg->{stdout}, $bg->{stderr});
	$out =~ s/\n?$re//;
	$err =~ s/$re//;
	return ($out, $err);
}

# ---------------------------------------------------------------------
# 1. An in-doubt transaction with a recorded decision (commit) on pa, pb
# and pc: the local commit happened, COMMIT PREPARED did not.
$coord->safe_psql('postgres', q{
	SET dtx.fault_point = 'after_local_commit';
	BEGIN;
	INSERT INTO t VALUES (1);
	SELECT dtx.exec('pa', 'INSERT INTO t VALUES (1)');
	SELECT dtx.exec('pb', 'INSERT INTO t VALUES (1)');
	SELECT dtx.exec('pc', 'INSERT INTO t VALUES (1)');
	COMMIT;
});
is(prepared(), '3', 'in doubt: three prepared transactions on the participants');
is($coord->safe_psql('postgres', q{SELECT string_agg(server || ':' || decision, ',' ORDER BY server) FROM dtx.in_doubt}),
	'pa:commit,pb:commit,pc:commit', 'in doubt: dtx.in_doubt lists them, decided commit');

# a server with nothing unresolved is dropped as before
add_participant($coord, 'pz', $part, 'a');
$coord->safe_psql('postgres', 'DROP SERVER pz CASCADE');
is(servers(), 'pa,pb,pc', 'a server without unresolved work drops');

for my $drop ('DROP SERVER pb CASCADE', 'DROP SERVER pa CASCADE',
	'DROP FOREIGN DATA WRAPPER postgres_fdw CASCADE', 'DROP OWNED BY dtx_owner CASCADE')
{
	my ($state, $msg, $stderr) = psql_error($coord, $drop);
	is($state, '55006', "$drop: refused with 55006");
	like($msg, qr/^cannot drop server "p[abc]" because pg_dtx has unresolved global transactions on it/,
		"$drop: ... the message names the server ($msg)");
	like($stderr, qr/DETAIL:\s+1 global transaction that prepared on server "p[abc]" has a decision/,
		"$drop: ... the detail counts the transactions");
	like($stderr, qr/HINT:.*dtx\.recover\(\).*dtx\.xa_recover, dtx\.xa_commit and dtx\.xa_rollback/,
		"$drop: ... the hint names dtx.recover and the xa_* functions");
}
# DROP EXTENSION pg_dtx CASCADE drops dtx.decisions before the servers of
# its wrapper: the table itself is guarded
{
	my ($state, $msg, $stderr) = psql_error($coord, 'DROP EXTENSION pg_dtx CASCADE');
	is($state, '55006', 'DROP EXTENSION pg_dtx CASCADE: refused with 55006');
	like($msg, qr/^cannot drop table dtx\.decisions because pg_dtx has unresolved global transactions/,
		"DROP EXTENSION pg_dtx CASCADE: ... the decision log is not dropped ($msg)");
	like($stderr, qr/HINT:.*dtx\.recover\(\).*dtx\.xa_recover, dtx\.xa_commit and dtx\.xa_rollback/,
		'DROP EXTENSION pg_dtx CASCADE: ... the hint names dtx.recover and the xa_* functions');
}
is(servers(), 'pa,pb,pc', 'refused drops: every server is still there');
is(prepared(), '3', 'refused drops: the prepared transactions are still there');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM dtx.in_doubt WHERE decision = \'commit\''),
	'3', 'refused drops: dtx.in_doubt still lists them');

# recovery finishes them and forgets the decision; then the drops succeed
is($coord->safe_psql('postgres', q{SELECT string_agg(server || ':' || action, ',' ORDER BY server) FROM dtx.recover()}),
	'pa:committed,pb:committed,pc:committed', 'dtx.recover() commits the three');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM dtx.decisions'), '0', 'dtx.recover() forgot the decision');
is(prepared(), '0', 'nothing left prepared');
is(join(',', map { $part->safe_psql($_, 'SELECT count(*) FROM t WHERE id = 1') } qw(a b c)),
	'1,1,1', 'the transaction committed on every participant');
$coord->safe_psql('postgres', 'DROP FOREIGN DATA WRAPPER postgres_fdw CASCADE');
$coord->safe_psql('postgres', 'DROP OWNED BY dtx_owner CASCADE');
is(servers(), 'pa', 'after recovery: DROP FOREIGN DATA WRAPPER ... CASCADE and DROP OWNED drop pb and pc');

# ---------------------------------------------------------------------
# 2. A DROP while a global transaction has prepared on the server but not
# yet committed locally (paused after PREPARE): its decision row is not
# committed yet, so the DROP must wait for the transaction (the lock the
# coordinator holds on the server), then see the decision and refuse.
{
	my ($a) = bg_session();
	my $ma = bg_start($a, q{SET dtx.fault_point = 'after_prepare'; SET dtx.fault_action = 'pause'; SET dtx.fault_pause = '5s';
		BEGIN; INSERT INTO t VALUES (2); SELECT dtx.exec('pa', 'INSERT INTO t VALUES (2)'); COMMIT});
	ok($part->poll_query_until('postgres', 'SELECT count(*) = 1 FROM pg_prepared_xacts'),
		'race 1: the transaction has prepared on pa and pauses before its local commit');
	my ($state, $msg) = psql_error($coord, 'DROP SERVER pa CASCADE');
	my ($out, $err) = bg_finish($a, $ma);
	unlike($err, qr/ERROR/, 'race 1: the transaction commits');
	is($state, '55006', 'race 1: the DROP waited for it and was refused (55006)');
	is(servers(), 'pa', 'race 1: pa is still there');
	is($part->safe_psql('a', 'SELECT count(*) FROM t WHERE id = 2'), '1', 'race 1: the transaction committed on pa');
	$coord->safe_psql('postgres', 'SELECT * FROM dtx.recover()');
	is($coord->safe_psql('postgres', 'SELECT count(*) FROM dtx.decisions'), '0', 'race 1: recovery forgot the decision');
	$a->quit;
}

# ---------------------------------------------------------------------
# 3. The other order: a DROP of the server, not yet committed, when a
# global transaction that used the server commits.  The commit waits for
# the DROP; once it is committed the server is gone, and the transaction
# fails (42704) before anything is prepared: nothing committed anywhere.
{
	# a server of its own, so that this part does not depend on the last
	add_participant($coord, 'pr', $part, 'a');
	my ($a, $apid) = bg_session();
	my ($b) = bg_session();
	$a->query_safe(q{BEGIN; INSERT INTO t VALUES (3); SELECT dtx.exec('pr', 'INSERT INTO t VALUES (3)')});
	$b->query_safe('SET client_min_messages = warning; BEGIN; DROP SERVER pr CASCADE');
	my $ma = bg_start($a, 'COMMIT');
	my $waiting = 0;
	for (1 .. 300)
	{
		if ($coord->safe_psql('postgres', "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $apid") eq 'Lock')
		{
			$waiting = 1;
			last;
		}
		usleep(100_000);
	}
	ok($waiting, 'race 2: the COMMIT waits for the uncommitted DROP of its server');
	$b->query_safe('COMMIT');
	my ($out, $err) = bg_finish($a, $ma);
	like($err, qr/ERROR:\s+42704: server "pr" was dropped while this transaction used it/,
		'race 2: once the DROP commits, the transaction fails with 42704');
	is(servers(), 'pa', 'race 2: pr is gone');
	is(prepared(), '0', 'race 2: nothing was prepared');
	is(join(',', $coord->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 3'),
			$part->safe_psql('a', 'SELECT count(*) FROM t WHERE id = 3')),
		'0,0', 'race 2: nothing committed, locally or on the participant');
	is($coord->safe_psql('postgres', 'SELECT count(*) FROM dtx.decisions'), '0', 'race 2: no decision recorded');
	$a->quit;
	$b->quit;
}

# with nothing unresolved, the extension drops (with its servers)
$coord->safe_psql('postgres', 'SET client_min_messages = warning; DROP EXTENSION pg_dtx CASCADE');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_extension WHERE extname = 'pg_dtx'}), '0',
	'with nothing unresolved, DROP EXTENSION pg_dtx CASCADE succeeds');

$coord->stop;
$part->stop;
done_testing();

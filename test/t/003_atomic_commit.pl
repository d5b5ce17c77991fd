# Atomic commit across databases: two-phase commit, the crash matrix
# (every fault point x coordinator kill -9 / coordinator immediate stop /
# participant immediate stop), a frozen participant during PREPARE, two
# coordinators sharing participants, manual resolution and bad input.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DtxTest;

my $coord = dtx_node('coord', conf => "dtx.recovery_interval = '1s'");
my $pa = dtx_node('part_a');
my $pb = dtx_node('part_b');
my $pc = dtx_node('part_c', conf => 'max_prepared_transactions = 0');

add_participant($coord, 'pa', $pa, 'postgres');
add_participant($coord, 'pb', $pb, 'postgres');
add_participant($coord, 'pc', $pc, 'postgres');
$_->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)') for ($coord, $pa, $pb, $pc);

sub count_id
{
	my ($node, $id) = @_;
	return $node->safe_psql('postgres', "SELECT count(*) FROM t WHERE id = $id");
}

sub prepared_count
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts');
}

sub xact_sql
{
	my ($id) = @_;
	return "BEGIN; INSERT INTO t VALUES ($id); "
	  . "SELECT dtx.exec('pa', 'INSERT INTO t VALUES ($id)'); "
	  . "SELECT dtx.exec('pb', 'INSERT INTO t VALUES ($id)'); COMMIT;";
}

# every participant and the coordinator agree, and nothing of ours is left prepared
sub settled
{
	my ($id, $expect, $what) = @_;
	ok($pa->poll_query_until('postgres', 'SELECT count(*) = 0 FROM pg_prepared_xacts')
		  && $pb->poll_query_until('postgres', 'SELECT count(*) = 0 FROM pg_prepared_xacts'),
		"$what: nothing left prepared after recovery");
	my @got = map { count_id($_, $id) } ($coord, $pa, $pb);
	is(join(',', @got), join(',', ($expect) x 3), "$what: coordinator and participants agree (" . ($expect ? 'committed' : 'rolled back') . ')');
}

# ---------------------------------------------------------------------
# the protocol
my $stats0 = $coord->safe_psql('postgres', 'SELECT prepared || \',\' || one_phase_commits FROM dtx.stats');
$coord->safe_psql('postgres', xact_sql(1));
is(join(',', map { count_id($_, 1) } ($coord, $pa, $pb)), '1,1,1', 'two-phase commit: committed everywhere');
my ($p0, $o0) = split /,/, $stats0;
is($coord->safe_psql('postgres', 'SELECT prepared FROM dtx.stats'), $p0 + 1, 'two-phase commit counted as prepared');

# one writer (a remote one) plus a reader: one phase, nothing prepared
$coord->safe_psql('postgres', q{BEGIN; SELECT dtx.exec('pa', 'INSERT INTO t VALUES (2)'); SELECT * FROM dtx.query('pb', 'SELECT count(*) FROM t') AS q(n bigint); COMMIT;});
is($coord->safe_psql('postgres', 'SELECT prepared || \',\' || one_phase_commits FROM dtx.stats'),
	($p0 + 1) . ',' . ($o0 + 1), 'one writer and a reader: one phase, no PREPARE');
is(count_id($pa, 2), '1', 'one-phase commit applied');

# local writer plus two read-only participants: no PREPARE either
$coord->safe_psql('postgres', q{BEGIN; INSERT INTO t VALUES (3); SELECT * FROM dtx.query('pa', 'SELECT 1') AS q(n int); SELECT * FROM dtx.query('pb', 'SELECT 1') AS q(n int); COMMIT;});
is($coord->safe_psql('postgres', 'SELECT prepared FROM dtx.stats'), $p0 + 1, 'read-only participants get a plain COMMIT');

# a failing PREPARE (deferred constraint violated at PREPARE) aborts everything
$pb->safe_psql('postgres', 'CREATE TABLE d (id int UNIQUE DEFERRABLE INITIALLY DEFERRED); INSERT INTO d VALUES (1)');
my ($st, $msg) = psql_error($coord, q{BEGIN; INSERT INTO t VALUES (4); SELECT dtx.exec('pa', 'INSERT INTO t VALUES (4)'); SELECT dtx.exec('pb', 'INSERT INTO d VALUES (1)'); COMMIT;});
is($st, '23505', 'a participant that votes no: its error comes back');
is(join(',', map { count_id($_, 4) } ($coord, $pa)), '0,0', 'a participant that votes no: nothing committed anywhere');
is(prepared_count($pa), '0', 'a participant that votes no: the others were rolled back, nothing prepared');

# synchronous_commit = off does not weaken the decision
$coord->safe_psql('postgres', "SET synchronous_commit = off; " . xact_sql(5));
is(join(',', map { count_id($_, 5) } ($coord, $pa, $pb)), '1,1,1', 'synchronous_commit = off: committed');

# dtx.phase2_wait = off: COMMIT returns once the decision is durable; the
# same session still reads its own writes through pg_dtx, and a session
# that ends at once leaves nothing behind
my $out_nw = $coord->safe_psql('postgres', "SET dtx.phase2_wait = off; " . xact_sql(50)
	. " SELECT n FROM dtx.query('pb', 'SELECT count(*) FROM t WHERE id = 50') AS q(n bigint);");
is((split /\n/, $out_nw)[-1], '1', 'phase2_wait = off: the session reads its own write right after COMMIT');
$coord->safe_psql('postgres', "SET dtx.phase2_wait = off; " . xact_sql(51));
settled(50, 1, 'phase2_wait = off');
settled(51, 1, 'phase2_wait = off, session ended right after COMMIT');

# a participant with max_prepared_transactions = 0: refused before anything is prepared
($st, $msg, my $err) = psql_error($coord, q{BEGIN; SELECT dtx.exec('pa', 'INSERT INTO t VALUES (6)'); SELECT dtx.exec('pc', 'INSERT INTO t VALUES (6)'); COMMIT;});
is($st, 'DX002', 'participant without prepared transactions: DX002');
like($err, qr/HINT:.*max_prepared_transactions/, 'participant without prepared transactions: the hint names the setting');
is(join(',', count_id($pa, 6), count_id($pc, 6), prepared_count($pa)), '0,0,0', 'participant without prepared transactions: nothing prepared or committed');
# ... but it can still be the only writer
$coord->safe_psql('postgres', q{BEGIN; SELECT dtx.exec('pc', 'INSERT INTO t VALUES (7)'); SELECT * FROM dtx.query('pa', 'SELECT 1') AS q(n int); COMMIT;});
is(count_id($pc, 7), '1', 'participant without prepared transactions: fine as the only writer');

# user PREPARE TRANSACTION with participants is refused
($st, $msg) = psql_error($coord, q{BEGIN; SELECT dtx.exec('pa', 'INSERT INTO t VALUES (8)'); PREPARE TRANSACTION 'mine';});
is($st, '0A000', 'user PREPARE TRANSACTION in a global transaction: refused');
is(count_id($pa, 8), '0', 'user PREPARE TRANSACTION: remote work rolled back');

# a participant down at commit time
my $bg = $coord->background_psql('postgres', on_error_stop => 0);
$bg->query_safe(q{BEGIN; INSERT INTO t VALUES (9); SELECT dtx.exec('pa', 'INSERT INTO t VALUES (9)'); SELECT dtx.exec('pb', 'INSERT INTO t VALUES (9)')});
$pb->stop('immediate');
my ($out, $ret) = $bg->query('COMMIT');
$pb->start;
isnt($ret, 0, 'participant down at commit: COMMIT fails');
$bg->quit;
settled(9, 0, 'participant down at commit');

# ---------------------------------------------------------------------
# the crash matrix
my @points = qw(before_prepare after_first_prepare after_prepare after_local_commit after_first_commit_prepared);
my %committed_if_coord_dies = (
	before_prepare => 0, after_first_prepare => 0, after_prepare => 0,
	after_local_commit => 1, after_first_commit_prepared => 1);
my $id = 100;

foreach my $point (@points)
{
	# (1) the coordinator backend is killed (SIGKILL) at the point
	$id++;
	my $off = -s $coord->logfile;
	$coord->psql('postgres', "SET dtx.fault_point = '$point'; SET dtx.fault_action = 'crash'; " . xact_sql($id));
	$coord->wait_for_log(qr/fault injected at $point: crashing/, $off);
	$coord->poll_query_until('postgres', 'SELECT true', 't');
	settled($id, $committed_if_coord_dies{$point}, "$point, coordinator backend killed");

	# (2) the coordinator is stopped with immediate shutdown at the point
	$id++;
	$off = -s $coord->logfile;
	my $s = $coord->background_psql('postgres', on_error_stop => 0);
	$s->{stdin} .= "SET dtx.fault_point = '$point'; SET dtx.fault_action = 'pause'; SET dtx.fault_pause = '60s'; " . xact_sql($id) . "\n";
	$s->{run}->pump_nb();
	$coord->wait_for_log(qr/fault injected at $point: pausing/, $off);
	$coord->stop('immediate');
	eval { $s->quit; };
	$coord->start;
	settled($id, $committed_if_coord_dies{$point}, "$point, coordinator immediate shutdown");

	# (3) a participant is stopped with immediate shutdown at the point;
	# whatever the outcome, the client's answer must match it
	$id++;
	$off = -s $coord->logfile;
	$s = $coord->background_psql('postgres', on_error_stop => 0);
	$s->{stdin} .= "SET dtx.fault_point = '$point'; SET dtx.fault_action = 'pause'; SET dtx.fault_pause = '3s'; " . xact_sql($id) . "\n\\echo DONE\n";
	$s->{run}->pump_nb();
	$coord->wait_for_log(qr/fault injected at $point: pausing/, $off);
	$pa->stop('immediate');
	$pa->start;
	$s->{run}->pump() until $s->{stdout} =~ /DONE/ || !$s->{run}->pumpable;
	my $acked = $s->{stderr} =~ /ERROR/ ? 0 : 1;
	eval { $s->quit; };
	settled($id, $acked, "$point, participant immediate shutdown (" . ($acked ? 'commit acknowledged' : 'error returned') . ')');
}

# ---------------------------------------------------------------------
# a participant frozen (SIGSTOP) during PREPARE: the commit fails within
# dtx.commit_timeout, and after SIGCONT nothing is left prepared
$id = 200;
my $off = -s $coord->logfile;
$bg = $coord->background_psql('postgres', on_error_stop => 0);
$bg->query_safe(q{SET dtx.commit_timeout = '2s'; SET dtx.cancel_timeout = '1s'; SET dtx.fault_point = 'after_first_prepare'; SET dtx.fault_action = 'pause'; SET dtx.fault_pause = '2s'});
$bg->query_safe("BEGIN; INSERT INTO t VALUES ($id); SELECT dtx.exec('pa', 'INSERT INTO t VALUES ($id)'); SELECT dtx.exec('pb', 'INSERT INTO t VALUES ($id)')");
my %rpid = map { split /\|/ } split /\n/,
  $bg->query_safe(q{SELECT server || '|' || remote_pid FROM dtx.connections()});
$bg->{stdin} .= "COMMIT;\n\\echo DONE\n";
$bg->{run}->pump_nb();
$coord->wait_for_log(qr/fault injected at after_first_prepare: pausing/, $off);
# freeze the participant that has not prepared yet
my $frozen = $pa->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts') eq '1' ? 'pb' : 'pa';
kill 'STOP', $rpid{$frozen};
my $t0 = time;
$bg->{run}->pump() until $bg->{stdout} =~ /DONE/ || !$bg->{run}->pumpable;
my $elapsed = time - $t0;
like($bg->{stderr}, qr/did not answer PREPARE TRANSACTION within dtx.commit_timeout/, 'frozen participant: clear error');
ok($elapsed < 30, "frozen participant: the commit failed in bounded time (${elapsed}s)");
kill 'CONT', $rpid{$frozen};
eval { $bg->quit; };
settled($id, 0, 'frozen participant');

# ---------------------------------------------------------------------
# two coordinators sharing the participants never resolve each other's
# transactions: a second cluster, and a second database on this cluster
my $coord2 = dtx_node('coord2', conf => "dtx.recovery_interval = '1s'");
add_participant($coord2, 'pa', $pa, 'postgres');
add_participant($coord2, 'pb', $pb, 'postgres');
$coord->safe_psql('postgres', 'CREATE DATABASE other');
$coord->safe_psql('other', qq{
	CREATE EXTENSION pg_dtx;
	CREATE SERVER pa FOREIGN DATA WRAPPER pg_dtx OPTIONS (host '@{[$pa->host]}', port '@{[$pa->port]}', dbname 'postgres');
	CREATE SERVER pb FOREIGN DATA WRAPPER pg_dtx OPTIONS (host '@{[$pb->host]}', port '@{[$pb->port]}', dbname 'postgres');
	CREATE USER MAPPING FOR CURRENT_USER SERVER pa;
	CREATE USER MAPPING FOR CURRENT_USER SERVER pb;
});
ok($coord->poll_query_until('postgres',
	q{SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker'}),
	'a recovery worker per database with the extension');

# leave in-doubt transactions of coord/postgres: its worker paused
$coord->safe_psql('postgres', q{ALTER SYSTEM SET dtx.recovery_interval = 0});
$coord->reload;
sleep 2;
$id = 300;
$coord->safe_psql('postgres', "SET dtx.fault_point = 'after_local_commit'; " . xact_sql($id));
# and an orphan without decision (coordinator crashed after preparing)
$coord->psql('postgres', "SET dtx.fault_point = 'after_prepare'; SET dtx.fault_action = 'crash'; " . xact_sql($id + 1));
$coord->poll_query_until('postgres', 'SELECT true', 't');
is(prepared_count($pa), '2', 'in-doubt transactions left on the participant');
# the restarted worker read the new interval; coord2 and db "other" run passes every second
sleep 4;
is(prepared_count($pa) . prepared_count($pb), '22', 'another cluster and another database left our transactions alone');
is($coord2->safe_psql('postgres', 'SELECT count(*) FROM dtx.in_doubt'), '0', 'coord2 sees no in-doubt transaction of its own');

my $in_doubt = $coord->safe_psql('postgres', q{SELECT server || ':' || coordinator_xid || ':' || decision FROM dtx.in_doubt ORDER BY server, decision});
like($in_doubt, qr/^pa:\d+:abort\npa:\d+:commit\npb:\d+:abort\npb:\d+:commit$/, 'dtx.in_doubt shows both, with their decisions');

# manual resolution: refusals
my $gid_commit = $coord->safe_psql('postgres', q{SELECT gid FROM dtx.in_doubt WHERE server = 'pa' AND decision = 'commit'});
my $gid_abort = $coord->safe_psql('postgres', q{SELECT gid FROM dtx.in_doubt WHERE server = 'pa' AND decision = 'abort'});
($st) = psql_error($coord, qq{SELECT dtx.xa_rollback('pa', '$gid_commit')});
is($st, 'DX004', 'xa_rollback of a committed global transaction: refused');
($st) = psql_error($coord, qq{SELECT dtx.xa_commit('pa', '$gid_abort')});
is($st, 'DX004', 'xa_commit of a global transaction decided abort: refused');
($st) = psql_error($coord2, qq{SELECT dtx.xa_commit('pa', '$gid_commit')});
is($st, 'DX005', 'xa_commit of a GID another coordinator owns: refused');
($st) = psql_error($coord, qq{SELECT dtx.xa_commit('pa', '$gid_commit')}, db => 'other');
is($st, 'DX005', 'xa_commit of a GID another database owns: refused');
$pa->safe_psql('postgres', q{BEGIN; INSERT INTO t VALUES (999); PREPARE TRANSACTION 'not_ours'});
($st) = psql_error($coord, q{SELECT dtx.xa_commit('pa', 'not_ours')});
is($st, 'DX005', 'xa_commit of a foreign GID: refused');
is($coord->safe_psql('postgres', q{SELECT ours FROM dtx.xa_recover('pa') WHERE gid = 'not_ours'}), 'f', 'xa_recover lists foreign GIDs as not ours');
($st) = psql_error($coord, q{SELECT dtx.xa_commit('nosuch', 'x')});
is($st, '42704', 'xa_commit on an unknown server: 42704');

# manual resolution that agrees with the decision
is($coord->safe_psql('postgres', qq{SELECT dtx.xa_commit('pa', '$gid_commit')}), 'committed', 'xa_commit following the decision');
ok(slurp_file($coord->logfile) =~ /manually committed prepared transaction "\Q$gid_commit\E"/, 'manual resolution is logged');

# dtx.recover() resolves the rest now
my $rec = $coord->safe_psql('postgres', q{SELECT server || ':' || action AS r FROM dtx.recover() ORDER BY r});
is($rec, "pa:rolled back\npb:committed\npb:rolled back", 'dtx.recover() reports what it did');
is($pa->safe_psql('postgres', q{SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'not_ours'}), '1', 'the foreign prepared transaction was left alone');
$pa->safe_psql('postgres', q{ROLLBACK PREPARED 'not_ours'});
settled($id, 1, 'in doubt, committed by hand and by dtx.recover()');
is(count_id($pa, $id + 1) . count_id($pb, $id + 1), '00', 'the orphan without decision was rolled back');

# decision rows do not pile up
$coord->safe_psql('postgres', q{ALTER SYSTEM RESET dtx.recovery_interval});
$coord->safe_psql('postgres', q{ALTER SYSTEM SET dtx.recovery_interval = '1s'});
$coord->reload;
$coord->safe_psql('postgres', xact_sql($_)) for 400 .. 420;
ok($coord->poll_query_until('postgres', 'SELECT count(*) = 0 FROM dtx.decisions'), 'finished decision rows are deleted');

# ---------------------------------------------------------------------
# workers follow DDL without a restart
$coord->safe_psql('other', 'DROP EXTENSION pg_dtx CASCADE');
ok($coord->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker'}),
	'DROP EXTENSION stops the worker of that database');
$coord->safe_psql('other', 'CREATE EXTENSION pg_dtx');
ok($coord->poll_query_until('postgres',
	q{SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker'}),
	'CREATE EXTENSION starts one');
$coord->safe_psql('postgres', 'DROP DATABASE other');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM pg_database WHERE datname = 'other'}), '0', 'DROP DATABASE works with a worker running');
my $wpid = $coord->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker'});
$coord->safe_psql('postgres', 'SELECT pg_reload_conf()');
sleep 1;
is($coord->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker'}), $wpid, 'SIGHUP: the worker reloads and keeps running');

# SIGTERM: the worker exits cleanly and the launcher starts a new one
my $logoff = -s $coord->logfile;
$coord->safe_psql('postgres', "SELECT pg_terminate_backend($wpid)");
ok($coord->poll_query_until('postgres',
	qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker' AND pid <> $wpid}),
	'SIGTERM: the worker exits and the launcher starts a new one');
unlike(substr(slurp_file($coord->logfile), $logoff), qr/terminated by signal|exited with exit code [^01]/, 'SIGTERM: no crash, no restart of the cluster');

unlike(slurp_file($coord->logfile), qr/server process .* was terminated by signal 11|TRAP:|PANIC/, 'no segfault, assertion or PANIC on the coordinator');

done_testing();

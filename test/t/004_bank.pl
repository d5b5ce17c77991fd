# The bank test: concurrent clients (pgbench) move money between accounts
# spread over three databases (the coordinator's own and two participants)
# while faults are injected, round after round: immediate restarts of each
# participant and of the coordinator, the coordinator crashing at a point of
# the commit protocol, kill -9 of a client's backend.  At the end the total
# is conserved and nothing is left in doubt.  Odd rounds run with
# dtx.phase2_wait = off.
#
# Short form by default (DTX_BANK_ROUNDS=10, 3 s each); the long form is
#   DTX_BANK_ROUNDS=200 DTX_BANK_SECONDS=5 test/run-tests bank
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DtxTest;

my $rounds = $ENV{DTX_BANK_ROUNDS} // 10;
my $seconds = $ENV{DTX_BANK_SECONDS} // 3;
my $accounts = 30;
my $initial = 1000;

my $coord = dtx_node('coord', conf => "dtx.recovery_interval = '1s'\nmax_connections = 40");
my $pa = dtx_node('part_a', conf => 'max_prepared_transactions = 40');
my $pb = dtx_node('part_b', conf => 'max_prepared_transactions = 40');
add_participant($coord, 'pa', $pa, 'postgres');
add_participant($coord, 'pb', $pb, 'postgres');

# account n lives on the coordinator (n % 3 = 0), on pa (1) or on pb (2)
my %home = (0 => $coord, 1 => $pa, 2 => $pb);
foreach my $r (0 .. 2)
{
	$home{$r}->safe_psql('postgres', qq{
		CREATE TABLE accounts (id int PRIMARY KEY, bal bigint NOT NULL);
		INSERT INTO accounts SELECT g, $initial FROM generate_series(1, $accounts) g WHERE g % 3 = $r;
	});
}
$coord->safe_psql('postgres', q{
	CREATE FUNCTION move(acct int, delta int) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	  CASE acct % 3
	    WHEN 0 THEN UPDATE accounts SET bal = bal + delta WHERE id = acct;
	    WHEN 1 THEN PERFORM dtx.exec('pa', format('UPDATE accounts SET bal = bal + %s WHERE id = %s', delta, acct));
	    ELSE PERFORM dtx.exec('pb', format('UPDATE accounts SET bal = bal + %s WHERE id = %s', delta, acct));
	  END CASE;
	END $$;
	-- accounts are locked in id order: no deadlock across databases
	CREATE FUNCTION transfer(a int, b int, amount int) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	  IF a = b THEN RETURN; END IF;
	  IF a < b THEN PERFORM move(a, -amount); PERFORM move(b, amount);
	  ELSE PERFORM move(b, amount); PERFORM move(a, -amount); END IF;
	END $$;
});

my $script = PostgreSQL::Test::Utils::tempdir() . '/transfer.sql';
open(my $fh, '>', $script) or die $!;
print $fh "\\set a random(1, $accounts)\n\\set b random(1, $accounts)\nSELECT transfer(:a, :b, 7);\n";
close($fh);

sub total
{
	my $sum = 0;
	$sum += $_->safe_psql('postgres', 'SELECT sum(bal) FROM accounts') for ($coord, $pa, $pb);
	return $sum;
}

my @points = qw(before_prepare after_first_prepare after_prepare after_local_commit after_first_commit_prepared);
my @kinds = qw(restart_a crash_point restart_b crash_point restart_coord crash_point kill_client crash_point);
my $crashes = 0;
my ($transfers, $faults) = (0, 0);
my %fault_count;

for my $round (1 .. $rounds)
{
	my ($out, $err) = ('', '');
	# every other round, COMMIT does not wait for phase 2
	local $ENV{PGOPTIONS} = $round % 2 ? '-c dtx.phase2_wait=off' : '';
	my $h = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '4', '-j', '2', '-T', $seconds, '-f', $script,
		  '-h', $coord->host, '-p', $coord->port, 'postgres' ],
		'>', \$out, '2>', \$err);
	sleep 1;

	my $kind = $kinds[ ($round - 1) % @kinds ];
	if ($kind eq 'restart_a') { $pa->stop('immediate'); $pa->start; }
	elsif ($kind eq 'restart_b') { $pb->stop('immediate'); $pb->start; }
	elsif ($kind eq 'restart_coord') { $coord->stop('immediate'); $coord->start; }
	elsif ($kind eq 'crash_point')
	{
		my $point = $points[ $crashes++ % @points ];
		$kind .= ":$point";
		$coord->psql('postgres', "SET dtx.fault_point = '$point'; SET dtx.fault_action = 'crash'; SELECT transfer(1, 2, 5);");
		$coord->poll_query_until('postgres', 'SELECT true', 't');
	}
	else
	{
		my $pid = $coord->safe_psql('postgres',
			q{SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' LIMIT 1});
		kill 'KILL', $pid if $pid;
		$coord->poll_query_until('postgres', 'SELECT true', 't');
	}
	$faults++;
	$fault_count{$kind}++;
	$h->finish;
	$transfers += $1 if $out =~ /number of transactions actually processed: (\d+)/;
}

# let recovery finish everything, then count the money
ok($coord->poll_query_until('postgres', 'SELECT count(*) = 0 FROM dtx.in_doubt'),
	'nothing left in doubt');
is($pa->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts')
	  . $pb->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'),
	'00', 'no prepared transaction left on the participants');
is(total(), $accounts * $initial, 'the total is conserved');
ok($transfers > 0, 'transfers were made');
my $stats = $coord->safe_psql('postgres',
	q{SELECT format('prepared %s, committed %s, aborted %s, phase-2 failures %s, recovered %s commit / %s abort', prepared, committed, aborted, phase2_failures, recovered_commits, recovered_aborts) FROM dtx.stats});
diag("report: bank: $transfers transfers in $rounds rounds, $faults faults ("
	  . join(', ', map { "$_ $fault_count{$_}" } sort keys %fault_count)
	  . "); since the last coordinator restart: $stats");

done_testing();

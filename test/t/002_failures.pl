# Failures around remote work: unreachable and silent participants, a
# participant that dies mid-statement, statement_timeout, pg_cancel_backend
# and termination during a long remote statement (the remote statement is
# cancelled too), and a frozen participant.  Each is an error with an
# SQLSTATE; the coordinator never crashes and never hangs.
use strict;
use warnings;

use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DtxTest;

my $coord = dtx_node('coord');
my $pa = dtx_node('part_a');
$pa->safe_psql('postgres', 'CREATE TABLE t (id int PRIMARY KEY)');
add_participant($coord, 'pa', $pa, 'postgres');

# active remote statements of pg_dtx on the participant that match $like
sub remote_active
{
	my ($like) = @_;
	return $pa->safe_psql('postgres', qq{
		SELECT count(*) FROM pg_stat_activity
		 WHERE application_name LIKE 'pg_dtx%' AND state = 'active'
		   AND query LIKE '$like'});
}

# ---------------------------------------------------------------------
# unreachable: nothing listens on the port
my $closed_port = PostgreSQL::Test::Cluster::get_free_port();
$coord->safe_psql('postgres', qq{
	CREATE SERVER refused FOREIGN DATA WRAPPER pg_dtx OPTIONS (host '127.0.0.1', port '$closed_port', dbname 'x');
	CREATE USER MAPPING FOR CURRENT_USER SERVER refused;
});
my ($state, $msg, $err) = psql_error($coord, q{SELECT dtx.exec('refused', 'SELECT 1')});
is($state, 'DX001', 'connection refused: participant unavailable');
like($err, qr/could not connect to participant "refused"/, 'connection refused: message names the participant');

# silent: a listener that accepts TCP but never answers the startup packet
my $silent = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
	Listen => 5, Proto => 'tcp', ReuseAddr => 1) or die "listen: $!";
my $silent_port = $silent->sockport;
$coord->safe_psql('postgres', qq{
	CREATE SERVER silent FOREIGN DATA WRAPPER pg_dtx OPTIONS (host '127.0.0.1', port '$silent_port', dbname 'x');
	CREATE USER MAPPING FOR CURRENT_USER SERVER silent;
});
($state, $msg, $err) = psql_error($coord,
	q{SET dtx.connect_timeout = '2s'; SELECT dtx.exec('silent', 'SELECT 1')});
is($state, 'DX001', 'silent participant: error after dtx.connect_timeout');
like($err, qr/timeout expired after 2 s/, 'silent participant: the detail says it timed out');

# the server's own connect_timeout option wins over the setting
$coord->safe_psql('postgres', q{ALTER SERVER silent OPTIONS (ADD connect_timeout '1')});
($state, $msg, $err) = psql_error($coord,
	q{SET dtx.connect_timeout = '1h'; SELECT dtx.exec('silent', 'SELECT 1')});
like($err, qr/timeout expired after 1 s/, 'server connect_timeout option is used');
$coord->safe_psql('postgres', q{ALTER SERVER silent OPTIONS (DROP connect_timeout)});

# connecting is interruptible: statement_timeout ends a connection attempt
($state, $msg, $err) = psql_error($coord,
	q{SET dtx.connect_timeout = '1h'; SET statement_timeout = '1s'; SELECT dtx.exec('silent', 'SELECT 1')});
is($state, '57014', 'statement_timeout interrupts a connection attempt');
close($silent);

# ---------------------------------------------------------------------
# statement_timeout during a long remote statement: the remote one is
# cancelled too, and the connection stays usable
my $bg = $coord->background_psql('postgres', on_error_stop => 0);
$bg->query_safe(q{SELECT dtx.exec('pa', 'SELECT 1')});
my $remote_pid = $bg->query_safe(q{SELECT remote_pid FROM dtx.connections() WHERE server = 'pa'});
like(bg_error($bg, q{SET statement_timeout = '1s'; SELECT dtx.exec('pa', 'SELECT pg_sleep(600)')}), qr/canceling statement due to statement timeout/, 'statement_timeout: local statement cancelled');
ok($pa->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND state = 'active' AND pid <> pg_backend_pid()}),
	'statement_timeout: remote statement cancelled');
$bg->query_safe(q{RESET statement_timeout});
is($bg->query_safe(q{SELECT remote_pid FROM dtx.connections() WHERE server = 'pa'}), $remote_pid,
	'statement_timeout: the cancelled connection was cleaned up and kept');
is($bg->query_safe(q{SELECT dtx.exec('pa', 'INSERT INTO t VALUES (1)')}), '1', 'statement_timeout: next statement works');

# pg_cancel_backend during a long remote statement in a transaction
$bg->query_safe(q{BEGIN});
$bg->query_safe(q{SELECT dtx.exec('pa', 'INSERT INTO t VALUES (2)')});
my $bg_pid = $bg->query_safe(q{SELECT pg_backend_pid()});
$bg->{stdin} .= "SELECT dtx.exec('pa', 'SELECT pg_sleep(601)');\n";
$bg->{run}->pump_nb();
ok($pa->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(601)%' AND state = 'active' AND pid <> pg_backend_pid()}),
	'cancel: remote statement running');
$coord->safe_psql('postgres', "SELECT pg_cancel_backend($bg_pid)");
ok($pa->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(601)%' AND state = 'active' AND pid <> pg_backend_pid()}),
	'cancel: remote statement cancelled');
like(bg_error($bg, q{SELECT 'after cancel'}), qr/canceling statement due to user request/, 'cancel: local statement cancelled');
bg_error($bg, q{ROLLBACK});
is($pa->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 2'), '0', 'cancel: remote work of the transaction rolled back');
$bg->quit;

# terminating the coordinating backend cancels its remote statement
$bg = $coord->background_psql('postgres', on_error_stop => 0);
$bg_pid = $bg->query_safe(q{SELECT pg_backend_pid()});
$bg->{stdin} .= "BEGIN; SELECT dtx.exec('pa', 'INSERT INTO t VALUES (3)'); SELECT dtx.exec('pa', 'SELECT pg_sleep(602)');\n";
$bg->{run}->pump_nb();
ok($pa->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(602)%' AND state = 'active' AND pid <> pg_backend_pid()}),
	'terminate: remote statement running');
$coord->safe_psql('postgres', "SELECT pg_terminate_backend($bg_pid)");
ok($pa->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(602)%' AND state = 'active' AND pid <> pg_backend_pid()}),
	'terminate: remote statement cancelled');
is($pa->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 3'), '0', 'terminate: remote work rolled back');
eval { $bg->quit; };

# ---------------------------------------------------------------------
# the participant dies in the middle of a statement
$bg = $coord->background_psql('postgres', on_error_stop => 0);
$bg->{stdin} .= "SELECT dtx.exec('pa', 'SELECT pg_sleep(603)');\n";
$bg->{run}->pump_nb();
ok($pa->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(603)%' AND state = 'active' AND pid <> pg_backend_pid()}),
	'participant crash: remote statement running');
$pa->stop('immediate');
like(bg_error($bg, q{SELECT 'after crash'}), qr/DX001|lost connection to participant "pa"/, 'participant crash: error, not a hang');
$pa->start;
is($bg->query_safe(q{SELECT dtx.exec('pa', 'SELECT 1')}), '1', 'participant back: the next statement reconnects');

# a participant lost inside a transaction is not silently replaced
$bg->query_safe(q{BEGIN});
$bg->query_safe(q{SELECT dtx.exec('pa', 'INSERT INTO t VALUES (4)')});
$pa->restart;
like(bg_error($bg, q{SELECT dtx.exec('pa', 'INSERT INTO t VALUES (5)')}), qr/lost connection to participant "pa"/, 'participant restarted mid-transaction: error');
bg_error($bg, q{COMMIT});
is($pa->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id IN (4, 5)'), '0', 'participant restarted mid-transaction: nothing committed');
is($bg->query_safe(q{SELECT dtx.exec('pa', 'SELECT 1')}), '1', 'and the next transaction reconnects');

# a participant restarted between two transactions: the cached connection
# is dead, and the next transaction reconnects without an error
$pa->restart;
is($bg->query_safe(q{SELECT dtx.exec('pa', 'INSERT INTO t VALUES (6)')}), '1', 'participant restarted between transactions: no error, reconnected');
is($pa->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 6'), '1', 'participant restarted between transactions: the write committed');
$bg->quit;

# ---------------------------------------------------------------------
# a frozen participant backend (SIGSTOP): statement_timeout still ends the
# local statement; the cancel cannot be served, so after dtx.cancel_timeout
# the connection is closed instead of waiting forever
$bg = $coord->background_psql('postgres', on_error_stop => 0);
$bg->query_safe(q{SELECT dtx.exec('pa', 'SELECT 1')});
$remote_pid = $bg->query_safe(q{SELECT remote_pid FROM dtx.connections() WHERE server = 'pa'});
kill 'STOP', $remote_pid;
like(bg_error($bg, q{SET dtx.cancel_timeout = '1s'; SET statement_timeout = '2s'; SELECT dtx.exec('pa', 'SELECT 1')}), qr/canceling statement due to statement timeout/, 'frozen participant: statement_timeout fires');
$bg->query_safe(q{RESET statement_timeout});
is($bg->query_safe(q{SELECT count(*) FROM dtx.connections() WHERE server = 'pa'}), '0',
	'frozen participant: the connection in an unknown state was closed');
kill 'CONT', $remote_pid;
is($bg->query_safe(q{SELECT dtx.exec('pa', 'SELECT 1')}), '1', 'frozen participant: a new connection works');
$bg->quit;

# the coordinator never crashed
unlike(slurp_file($coord->logfile), qr/terminated by signal|was terminated by/,
	'no backend crash on the coordinator');
is($coord->safe_psql('postgres', 'SELECT 1'), '1', 'coordinator up');

done_testing();

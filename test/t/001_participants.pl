# Remote work on two real participant clusters commits and rolls back with
# the coordinator's transaction; savepoints are mirrored; a non-superuser
# connects with a password over TCP; servers of postgres_fdw work too; the
# participant sees pg_dtx's application_name; no password reaches a log.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DtxTest;

my $password = 'Pw-6d1f-never-logged';

my $coord = dtx_node('coord');
my $pa = dtx_node('part_a', tcp => 1);
my $pb = dtx_node('part_b', tcp => 1);

for my $p ($pa, $pb)
{
	# (log_statement = none: PostgreSQL itself would log these passwords)
	$p->safe_psql('postgres', qq{
		SET log_statement = 'none';
		CREATE ROLE app LOGIN PASSWORD '$password';
		CREATE DATABASE bank OWNER app;
	});
	$p->safe_psql('bank', q{
		SET ROLE app;
		CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL CHECK (balance >= 0));
		INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 10) g;
	});
}

# The coordinator's application role is not a superuser; it reaches the
# participants over TCP with a password.
$coord->safe_psql('postgres', qq{
	CREATE EXTENSION pg_dtx;
	CREATE ROLE app LOGIN;
	CREATE TABLE transfers (id serial PRIMARY KEY, amount numeric);
	GRANT ALL ON transfers, transfers_id_seq TO app;
});
for my $s ([ 'bank_a', $pa ], [ 'bank_b', $pb ])
{
	my ($name, $node) = @$s;
	my $port = $node->port;
	$coord->safe_psql('postgres', qq{
		SET log_statement = 'none';
		CREATE SERVER $name FOREIGN DATA WRAPPER pg_dtx
		  OPTIONS (host '127.0.0.1', port '$port', dbname 'bank');
		CREATE USER MAPPING FOR app SERVER $name OPTIONS (user 'app', password '$password');
		GRANT USAGE ON FOREIGN SERVER $name TO app;
	});
}

sub app_psql
{
	my ($sql) = @_;
	return $coord->safe_psql('postgres', "SET ROLE app;\n$sql");
}

sub balance
{
	my ($node, $id) = @_;
	return $node->safe_psql('bank', "SELECT balance FROM accounts WHERE id = $id");
}

# commit
app_psql(q{
	BEGIN;
	INSERT INTO transfers (amount) VALUES (30);
	SELECT dtx.exec('bank_a', 'UPDATE accounts SET balance = balance - 30 WHERE id = 1');
	SELECT dtx.exec('bank_b', 'UPDATE accounts SET balance = balance + 30 WHERE id = 1');
	COMMIT;
});
is(balance($pa, 1), '70', 'commit: debit on participant a');
is(balance($pb, 1), '130', 'commit: credit on participant b');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM transfers'), '1', 'commit: local row');

# rollback
app_psql(q{
	BEGIN;
	INSERT INTO transfers (amount) VALUES (40);
	SELECT dtx.exec('bank_a', 'UPDATE accounts SET balance = balance - 40 WHERE id = 2');
	SELECT dtx.exec('bank_b', 'UPDATE accounts SET balance = balance + 40 WHERE id = 2');
	ROLLBACK;
});
is(balance($pa, 2), '100', 'rollback: participant a untouched');
is(balance($pb, 2), '100', 'rollback: participant b untouched');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM transfers'), '1', 'rollback: no local row');

# a failure on one participant rolls back the other and the local work
my ($state, $msg) = psql_error($coord, q{
	SET ROLE app;
	BEGIN;
	INSERT INTO transfers (amount) VALUES (500);
	SELECT dtx.exec('bank_b', 'UPDATE accounts SET balance = balance + 500 WHERE id = 3');
	SELECT dtx.exec('bank_a', 'UPDATE accounts SET balance = balance - 500 WHERE id = 3');
	COMMIT;
});
is($state, '23514', 'remote check violation keeps its SQLSTATE');
is(balance($pb, 3), '100', 'failure on a: b rolled back');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM transfers'), '1', 'failure: no local row');

# ROLLBACK TO SAVEPOINT undoes remote work on both participants
app_psql(q{
	BEGIN;
	SELECT dtx.exec('bank_a', 'UPDATE accounts SET balance = balance + 1 WHERE id = 4');
	SAVEPOINT before_big;
	SELECT dtx.exec('bank_a', 'UPDATE accounts SET balance = balance + 1000 WHERE id = 4');
	SELECT dtx.exec('bank_b', 'UPDATE accounts SET balance = balance + 1000 WHERE id = 4');
	ROLLBACK TO SAVEPOINT before_big;
	SELECT dtx.exec('bank_b', 'UPDATE accounts SET balance = balance + 2 WHERE id = 4');
	COMMIT;
});
is(balance($pa, 4), '101', 'savepoint: work before it kept on a');
is(balance($pb, 4), '102', 'savepoint: work after it undone on b, later work kept');

# the participant sees pg_dtx and the coordinating backend in application_name
my $bg = $coord->background_psql('postgres');
$bg->query_safe('SET ROLE app');
my $coord_pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_safe(q{BEGIN; SELECT dtx.exec('bank_a', 'SELECT 1')});
my $apps = $pa->safe_psql('postgres',
	"SELECT application_name || '|' || usename FROM pg_stat_activity WHERE application_name LIKE 'pg_dtx coordinator%' AND usename = 'app'");
is($apps, "pg_dtx coordinator pid=$coord_pid|app",
	'participant connection names pg_dtx and the coordinating backend');
is($bg->query_safe(q{SELECT server || ':' || in_transaction FROM dtx.participants WHERE connected ORDER BY 1}),
	'bank_a:true', 'dtx.participants shows the open remote transaction');
$bg->query_safe('COMMIT');
$bg->quit;

# postgres_fdw servers are participants too
my $pb_port = $pb->port;
$coord->safe_psql('postgres', qq{
	SET log_statement = 'none';
	CREATE EXTENSION postgres_fdw;
	CREATE SERVER fdw_b FOREIGN DATA WRAPPER postgres_fdw
	  OPTIONS (host '127.0.0.1', port '$pb_port', dbname 'bank', fetch_size '100');
	CREATE USER MAPPING FOR app SERVER fdw_b OPTIONS (user 'app', password '$password');
	GRANT USAGE ON FOREIGN SERVER fdw_b TO app;
});
app_psql(q{
	BEGIN;
	SELECT dtx.exec('bank_a', 'UPDATE accounts SET balance = balance - 5 WHERE id = 5');
	SELECT dtx.exec('fdw_b', 'UPDATE accounts SET balance = balance + 5 WHERE id = 5');
	COMMIT;
});
is(balance($pb, 5), '105', 'postgres_fdw server used as a participant');
is(app_psql(q{SELECT wrapper FROM dtx.participants WHERE server = 'fdw_b'}),
	'postgres_fdw', 'postgres_fdw server listed in dtx.participants');

# probing
is(app_psql(q{SELECT string_agg(server || ':' || reachable || ':' || max_prepared_transactions, ',' ORDER BY server) FROM dtx.probe()}),
	'bank_a:true:10,bank_b:true:10,fdw_b:true:10', 'dtx.probe reaches every participant');

# a wrong password: the remote authentication error, and never the password
$coord->safe_psql('postgres', q{
	SET log_statement = 'none';
	CREATE SERVER bank_a_badpw FOREIGN DATA WRAPPER pg_dtx OPTIONS (host '127.0.0.1', port '} . $pa->port . q{', dbname 'bank');
	CREATE USER MAPPING FOR app SERVER bank_a_badpw OPTIONS (user 'app', password 'wrong-Secret-77');
	GRANT USAGE ON FOREIGN SERVER bank_a_badpw TO app;
});
my $stderr;
($state, $msg, $stderr) = psql_error($coord, q{SET ROLE app; SELECT dtx.exec('bank_a_badpw', 'SELECT 1')});
is($state, 'DX001', 'wrong password: participant unavailable');
like($stderr, qr/password authentication failed/, 'wrong password: libpq reason in the detail');
unlike($stderr, qr/wrong-Secret-77|\Q$password\E/, 'the error carries no password');
my $probe = app_psql(q{SELECT coalesce(error, '') FROM dtx.probe('bank_a_badpw')});
unlike($probe, qr/wrong-Secret-77/, 'dtx.probe error carries no password');
like($probe, qr/password authentication failed/, 'dtx.probe reports the failure');

# no password in any server log, on any node
for my $node ($coord, $pa, $pb)
{
	my $log = slurp_file($node->logfile);
	unlike($log, qr/\Q$password\E|wrong-Secret-77/, 'no password in the log of ' . $node->name);
}

# the coordinator never crashed
for my $node ($coord, $pa, $pb)
{
	unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/,
		'no backend crash on ' . $node->name);
}

done_testing();

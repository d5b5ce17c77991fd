# Names pg_dtx passes to libpq are values, never connection strings.
#
# Every libpq connection pg_dtx makes gets its database and role names as
# keyword/value pairs with expand_dbname = 0, so a name that looks like a
# connection string ("dbname=postgres user=<superuser>", "host=... port=...")
# is only a name:
# - participants (dtx.exec/dtx.query, and through the same code recovery
#   and the outbox's postgres sinks): a server whose dbname option is such
#   a string reaches the database of that very name;
# - the isolation lab with dtx.lab_conninfo set: its user and dbname are
#   ignored, and the lab runs as the caller in a database whose name is
#   such a string (009_lab covers the lab without dtx.lab_conninfo).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DtxTest;

my $node = dtx_node('names');
my $su = $node->safe_psql('postgres', 'SELECT current_user');
my @names = ("dbname=postgres user=$su", 'host=/nonexistent port=1 dbname=postgres',
	'postgresql:///postgres?user=' . $su);

$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_dtx;
	CREATE ROLE names_app LOGIN;
});
for my $db (@names)
{
	(my $ident = $db) =~ s/"/""/g;
	$node->safe_psql('postgres', qq{CREATE DATABASE "$ident" OWNER names_app});
	$node->safe_psql($db, 'CREATE EXTENSION pg_dtx');
}

# participants: a server's dbname option is a value
my ($host, $port) = ($node->host, $node->port);
my $i = 0;
for my $db (@names)
{
	$i++;
	(my $lit = $db) =~ s/'/''/g;
	$node->safe_psql('postgres', qq{
		CREATE SERVER n$i FOREIGN DATA WRAPPER pg_dtx OPTIONS (host '$host', port '$port', dbname '$lit');
		CREATE USER MAPPING FOR CURRENT_USER SERVER n$i;
	});
	is($node->safe_psql('postgres', qq{SELECT d || '|' || coalesce(p::text, '') FROM dtx.query('n$i', 'SELECT current_database(), inet_server_port()') AS q(d name, p int)}),
		"$db|", "participant n$i: dbname '$db' reaches the database of that name, over the socket");
}

# dtx.lab_conninfo is checked when it is set
{
	my ($state, $msg, $stderr) = psql_error($node, q{SET dtx.lab_conninfo = 'host'});
	is($state, '22023', 'dtx.lab_conninfo that is not a connection string: refused with 22023');
	like($stderr, qr/DETAIL:\s+missing "=" after "host"/, '... with libpq\'s complaint as the detail');
}

# the lab with dtx.lab_conninfo naming another user and database: the
# caller's role and database are used, as values
(my $ci = "host='$host' port=$port user=$su dbname=postgres") =~ s/'/''/g;
$node->safe_psql('postgres', "ALTER SYSTEM SET dtx.lab_conninfo = '$ci'");
$node->reload;
ok($node->poll_query_until('postgres', "SELECT current_setting('dtx.lab_conninfo') <> ''"),
	'dtx.lab_conninfo is set');
for my $db (@names)
{
	is($node->safe_psql($db,
			q{SELECT string_agg(format('%s|%s|%s', step, outcome, result), E'\n') FROM dtx.lab_run('{"setup": "create table who as select current_user::text as u, current_database()::text as d", "steps": [["T1", "select current_user, current_database()"]]}')},
			extra_params => [ '-U', 'names_app' ]),
		"1|ok|(names_app,$db)\n|final|(names_app,$db)",
		"lab with dtx.lab_conninfo, database '$db': the admin connection and the session run as the caller in that database");
	my ($state, $msg) = psql_error($node,
		q{SELECT * FROM dtx.lab_run('{"setup": "ALTER ROLE names_app SUPERUSER", "steps": [["T1", "select 1"]]}')},
		db => $db, extra_params => [ '-U', 'names_app' ]);
	is($state, '42501', "lab with dtx.lab_conninfo, database '$db': ALTER ROLE ... SUPERUSER in setup fails ($msg)");
}
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'names_app'}), 'f',
	'names_app is not superuser');

$node->stop;
done_testing();

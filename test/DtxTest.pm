# DtxTest: helpers for pg_dtx TAP tests.
#
# Starts real PostgreSQL clusters with pg_dtx preloaded (a coordinator and
# participants on loopback), wires participants to a coordinator as foreign
# servers, and reads psql errors back as (SQLSTATE, message).
package DtxTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Exporter 'import';

our @EXPORT = qw(dtx_node add_participant psql_error);

# dtx_node(name, conf => extra postgresql.conf lines, tcp => 1)
# A started cluster with pg_dtx preloaded.  With tcp => 1 it also listens on
# 127.0.0.1 and asks TCP clients for a scram password.
sub dtx_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', join("\n",
		"shared_preload_libraries = 'pg_dtx'",
		"max_prepared_transactions = 10",
		"log_line_prefix = '%m [%p] %q%a '",
		"restart_after_crash = on",
		($opts{conf} // '')));
	if ($opts{tcp})
	{
		$node->append_conf('postgresql.conf', "listen_addresses = '127.0.0.1'");
		# replace the trust rules init wrote: TCP clients need a password
		open(my $hba, '>', $node->data_dir . '/pg_hba.conf') or die $!;
		print $hba "local all all trust\n";
		print $hba "host all all 127.0.0.1/32 scram-sha-256\n";
		close($hba);
	}
	$node->start;
	return $node;
}

# add_participant(coord, server_name, participant_node, dbname, tcp => 1)
# Creates a pg_dtx server on the coordinator and a superuser user mapping.
sub add_participant
{
	my ($coord, $srv, $part, $dbname, %opts) = @_;
	my $host = $opts{tcp} ? '127.0.0.1' : $part->host;
	my $port = $part->port;
	$coord->safe_psql('postgres', qq{
		CREATE EXTENSION IF NOT EXISTS pg_dtx;
		CREATE SERVER $srv FOREIGN DATA WRAPPER pg_dtx
		  OPTIONS (host '$host', port '$port', dbname '$dbname');
	});
	$coord->safe_psql('postgres',
		"CREATE USER MAPPING FOR CURRENT_USER SERVER $srv")
	  unless $opts{no_mapping};
	return;
}

# psql_error(node, sql, %psql_opts) -> (sqlstate, message, stderr)
# Runs sql expecting an error; the SQLSTATE is read with VERBOSITY verbose.
sub psql_error
{
	my ($node, $sql, %opts) = @_;
	my ($stdout, $stderr);
	$node->psql($opts{db} // 'postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$stdout, stderr => \$stderr,
		($opts{extra_params} ? (extra_params => $opts{extra_params}) : ()));
	my ($state, $msg) = $stderr =~ /ERROR:\s+([0-9A-Z]{5}):\s+(.*)/;
	return ($state // '', $msg // '', $stderr);
}

1;

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
use Time::HiRes qw(usleep);
use Exporter 'import';

our @EXPORT = qw(dtx_node add_participant psql_error bg_error kill9_postmaster);

# dtx_node(name, conf => extra postgresql.conf lines, tcp => 1,
#          allows_streaming => 1)
# A started cluster with pg_dtx preloaded.  With tcp => 1 it also listens on
# 127.0.0.1 and asks TCP clients for a scram password.  allows_streaming is
# passed to init (wal_level replica, WAL senders, replication in pg_hba), so
# that standbys can be made from a backup of the node.
sub dtx_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init($opts{allows_streaming} ? (allows_streaming => 1) : ());
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

# bg_error(bg, sql): run sql in a background psql, return its stderr and
# clear it (BackgroundPsql keeps stderr across queries)
sub bg_error
{
	my ($bg, $sql) = @_;
	$bg->query($sql);
	my $err = $bg->{stderr};
	$bg->{stderr} = '';
	return $err;
}

# The state letter of /proc/PID/stat ('R', 'S', 'T', 'Z', ...), or undef
# when there is no such process.
sub _proc_state
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return undef;
	my $stat = <$fh>;
	close($fh);
	return undef unless defined $stat;
	# "pid (comm) state ppid ...": comm may hold spaces and parentheses
	my @f = split ' ', substr($stat, rindex($stat, ')') + 2);
	return $f[0];
}

# kill9_postmaster(node) -> (postmaster pid, child pids)
# A crash of the postmaster: SIGKILL to it alone, as the OOM killer would
# send.  Its children are left to notice and exit by themselves (a backend
# busy in a statement finishes it first).  Returns once every process of the
# old instance is gone: a child still attached to the shared memory, or a
# dead postmaster not yet reaped (the new postmaster takes a zombie for a
# live one when it checks postmaster.pid), would make the next
# $node->start fail.  The postmaster is stopped (SIGSTOP) while its children
# are listed, so that it cannot fork one we would miss.  Linux only (/proc).
sub kill9_postmaster
{
	my ($node) = @_;
	my $pidfile = $node->data_dir . '/postmaster.pid';
	open(my $fh, '<', $pidfile) or die "kill9_postmaster: cannot read $pidfile: $!";
	chomp(my $pm = <$fh>);
	close($fh);
	die "kill9_postmaster: no postmaster pid in $pidfile" unless $pm =~ /^\d+$/;

	kill 'STOP', $pm;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while ((_proc_state($pm) // 'T') ne 'T')
	{
		die "kill9_postmaster: postmaster $pm does not stop" if time > $deadline;
		usleep(1_000);
	}
	my @children;
	opendir(my $dh, '/proc') or die "kill9_postmaster: /proc: $!";
	foreach my $pid (grep { /^\d+$/ } readdir($dh))
	{
		open(my $st, '<', "/proc/$pid/stat") or next;
		my $stat = <$st>;
		close($st);
		next unless defined $stat;
		my @f = split ' ', substr($stat, rindex($stat, ')') + 2);
		push @children, $pid if $f[1] == $pm;
	}
	closedir($dh);

	$node->kill9;    # SIGKILL, and the node is known stopped

	# children: gone or exited (a zombie has left the shared memory);
	# the postmaster: reaped
	while (1)
	{
		my @left = grep { defined(_proc_state($_)) } $pm;
		push @left, grep { (_proc_state($_) // 'Z') ne 'Z' } @children;
		last unless @left;
		die "kill9_postmaster: processes of the old instance still there: @left"
		  if time > $deadline;
		usleep(20_000);
	}
	return ($pm, @children);
}

1;

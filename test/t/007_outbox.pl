# The outbox's sinks against a real HTTP server (test/http_server.py) and a
# real LISTEN session: HTTP 200, 500, 429 with Retry-After, timeouts and
# refused connections; a sink down for a while (backoff, the breaker opens
# and closes, per-key order kept); a poison message dead-lettered while other
# keys flow, then replayed; NOTIFY order; and the worker's lifecycle
# (wake at commit, SIGHUP, prompt shutdown with requests in flight, DROP
# EXTENSION and DROP DATABASE not blocked).
use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use DtxTest;

# --- the HTTP server ---------------------------------------------------------

my $portfile = PostgreSQL::Test::Utils::tempdir() . '/http.port';
my $http = IPC::Run::start([ 'python3', 'test/http_server.py', '--port-file', $portfile ],
	'>', \my $http_out, '2>', \my $http_err);
my $deadline = time + 30;
usleep(50_000) while !-s $portfile && time < $deadline;
open(my $pf, '<', $portfile) or die "test HTTP server did not start: $http_err";
chomp(my $hport = <$pf>);
close($pf);
my $base = "http://127.0.0.1:$hport";
my $json = JSON::PP->new->canonical;

# admin calls with a short Perl client (no curl dependency)
sub http_admin
{
	my ($method, $path, $body) = @_;
	require IO::Socket::INET;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $hport, Proto => 'tcp')
	  or die "connect: $!";
	$body //= '';
	print $s "$method $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	  . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
	local $/;
	my $resp = <$s>;
	close($s);
	my ($rbody) = $resp =~ /\r\n\r\n(.*)\z/s;
	return $json->decode($rbody);
}

sub http_mode { my ($path, %m) = @_; http_admin('POST', '/_admin/mode', $json->encode({ path => $path, %m })); }
sub received { my ($path) = @_; return http_admin('GET', "/_admin/received?path=$path"); }
sub ok_bodies { my ($path) = @_; return [ map { $_->{body} } grep { ($_->{status} // 0) == 200 } @{ received($path) } ]; }

# --- the cluster ---------------------------------------------------------------

my $node = dtx_node('outbox', conf => join("\n",
	"dtx.outbox_backoff_base = 50",
	"dtx.outbox_backoff_max = 400",
	# a wake-up missed at commit would wait an hour: the deliveries below
	# prove that the latch is set at commit
	"dtx.outbox_poll_interval = '1h'"));
$node->safe_psql('postgres', 'CREATE EXTENSION pg_dtx');

sub sq { my ($sql, $db) = @_; return $node->safe_psql($db // 'postgres', $sql); }

sub wait_for
{
	my ($sql, $what, $db) = @_;
	ok($node->poll_query_until($db // 'postgres', $sql), $what);
}

sub sink
{
	my ($name, $path, %opts) = @_;
	my $o = $json->encode({ url => "$base$path", %opts });
	sq("SELECT dtx.sink_create('$name', 'http', '$o'); SELECT dtx.route_create('$name', '$name')");
}

# --- 200: the body, the headers, key order --------------------------------------

sink('ok', '/ok', headers => { 'X-Tenant' => 'acme' });
sq(q{BEGIN;
    SELECT dtx.outbox_send('ok', jsonb_build_object('n', g), 'k', '{"trace": "t1"}') FROM generate_series(1, 5) g;
    COMMIT});
wait_for(q{SELECT delivered = 5 FROM dtx.outbox_status WHERE sink = 'ok'}, '200: five messages delivered');
my $got = received('/ok');
is_deeply([ map { $_->{body}{payload}{n} } @$got ], [ 1 .. 5 ], '200: one key, delivered in order, once each');
is($got->[0]{body}{topic}, 'ok', 'body: topic');
is($got->[0]{body}{key}, 'k', 'body: key');
is_deeply($got->[0]{body}{headers}, { trace => 't1' }, 'body: message headers');
is($got->[0]{body}{attempt}, 1, 'body: attempt number');
is($got->[0]{idempotency_key}, "$got->[0]{body}{id}", 'Idempotency-Key is the message id');
is(sq(q{SELECT count(*) FROM dtx.outbox}), '0', 'delivered messages leave the hot table');

# --- 500 then 200: retried with backoff ----------------------------------------

sink('e500', '/e500');
http_mode('/e500', status => 500, fail_times => 3);
sq(q{SELECT dtx.outbox_send('e500', '{"n": 1}')});
wait_for(q{SELECT delivered = 1 FROM dtx.outbox_status WHERE sink = 'e500'}, '500: delivered after retries');
$got = received('/e500');
is_deeply([ map { $_->{status} } @$got ], [ 500, 500, 500, 200 ], '500: three failures, then success');
is($got->[-1]{body}{attempt}, 4, '500: the fourth attempt succeeded');
cmp_ok($got->[3]{t} - $got->[2]{t}, '>', $got->[1]{t} - $got->[0]{t} - 0.05,
	'500: the delay between attempts grows (exponential backoff)');

# --- 429 with Retry-After -------------------------------------------------------

sink('e429', '/e429');
http_mode('/e429', status => 429, retry_after => 2, fail_times => 1);
sq(q{SELECT dtx.outbox_send('e429', '{"n": 1}')});
wait_for(q{SELECT delivered = 1 FROM dtx.outbox_status WHERE sink = 'e429'}, '429: delivered after Retry-After');
$got = received('/e429');
is_deeply([ map { $_->{status} } @$got ], [ 429, 200 ], '429 then 200');
cmp_ok($got->[1]{t} - $got->[0]{t}, '>=', 1.9, '429: the retry waited for Retry-After (2 s), not the 50 ms backoff');
is(sq(q{SELECT consecutive_failures FROM dtx.outbox_status WHERE sink = 'e429'}), '0',
	'429 does not count against the breaker');

# --- timeouts and refused connections --------------------------------------------

sink('slow', '/slow', timeout_ms => 300);
http_mode('/slow', delay_ms => 1500, fail_times => 2);
sq(q{SELECT dtx.outbox_send('slow', '{"n": 1}')});
wait_for(q{SELECT delivered = 1 FROM dtx.outbox_status WHERE sink = 'slow'}, 'slow: delivered once the server is fast again');
like(sq(q{SELECT last_error FROM dtx.outbox_status WHERE sink = 'slow'}), qr/Timeout/i, 'slow: the timeout is the recorded error');
is(scalar(grep { $_->{body}{attempt} == 3 && $_->{status} == 200 } @{ received('/slow') }), 1,
	'slow: the third attempt went through');

sq(q{SELECT dtx.sink_create('refused', 'http', '{"url": "http://127.0.0.1:1/x", "breaker_threshold": 2, "breaker_cooldown_ms": 600000}');
    SELECT dtx.route_create('refused', 'refused');
    SELECT dtx.outbox_send('refused', '{"n": 1}')});
wait_for(q{SELECT breaker = 'open' FROM dtx.outbox_status WHERE sink = 'refused'}, 'refused: the breaker opens');
like(sq(q{SELECT last_error FROM dtx.outbox_status WHERE sink = 'refused'}), qr/connect/i, 'refused: connection error recorded');
is(sq(q{SELECT ready + deferred FROM dtx.outbox_status WHERE sink = 'refused'}), '1', 'refused: the message is kept');

# --- TLS: https goes through libcurl's TLS and the system's CA store; a
# server whose certificate no system CA signed is refused ----------------------

my $tlsdir = PostgreSQL::Test::Utils::tempdir();
my ($ssl_out, $ssl_err);
IPC::Run::run([ 'openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1',
	'-days', '1', '-keyout', "$tlsdir/key.pem", '-out', "$tlsdir/cert.pem" ], '>', \$ssl_out, '2>', \$ssl_err)
  or die "openssl req failed: $ssl_err";
my $tls_py = q{
import http.server, os, ssl, sys
d = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        open(d + '/posted', 'a').write('x')
        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(d + '/cert.pem', d + '/key.pem')
s.socket = ctx.wrap_socket(s.socket, server_side=True)
open(d + '/port.tmp', 'w').write(str(s.server_address[1])); os.rename(d + '/port.tmp', d + '/port')
s.serve_forever()
};
my $tls = IPC::Run::start([ 'python3', '-c', $tls_py, $tlsdir ], '>', \my $tls_out, '2>', \my $tls_err);
$deadline = time + 30;
usleep(50_000) while !-s "$tlsdir/port" && time < $deadline;
my $tls_port = slurp_file("$tlsdir/port");
sq(qq{SELECT dtx.sink_create('tls', 'http', '{"url": "https://127.0.0.1:$tls_port/x", "breaker_threshold": 1, "breaker_cooldown_ms": 600000}');
      SELECT dtx.route_create('tls', 'tls');
      SELECT dtx.outbox_send('tls', '{"n": 1}')});
wait_for(q{SELECT breaker = 'open' FROM dtx.outbox_status WHERE sink = 'tls'}, 'TLS: an untrusted certificate fails the request');
like(sq(q{SELECT last_error FROM dtx.outbox_status WHERE sink = 'tls'}), qr/SSL|certificate/i,
	'TLS: the error is the certificate check');
ok(!-e "$tlsdir/posted", 'TLS: nothing was posted to the untrusted server');
$tls->kill_kill;

# --- a sink down for a while -------------------------------------------------------

sink('flaky', '/flaky', breaker_threshold => 3, breaker_cooldown_ms => 500, backoff_base_ms => 20, backoff_max_ms => 200);
http_mode('/flaky', status => 503);
sq(q{BEGIN;
    SELECT dtx.outbox_send('flaky', jsonb_build_object('key', 'k' || (g % 4), 'n', g), 'k' || (g % 4))
      FROM generate_series(1, 40) g;
    COMMIT});
wait_for(q{SELECT breaker = 'open' FROM dtx.outbox_status WHERE sink = 'flaky'}, 'down: the breaker opens');
# while it is open, only half-open probes reach the server: one at a time
my $n_open = scalar @{ received('/flaky') };
wait_for(qq{SELECT count(*) >= 1 FROM dtx.outbox_blocked_keys() WHERE sink = 'flaky'}, 'down: keys are blocked');
http_mode('/flaky', status => 200);
wait_for(q{SELECT delivered = 40 AND breaker = 'closed' FROM dtx.outbox_status WHERE sink = 'flaky'},
	'down, then up: every message delivered and the breaker closed');
my %seq;
push @{ $seq{ $_->{key} } }, $_->{n} for @{ ok_bodies('/flaky') };
is(scalar(keys %seq), 4, 'down: four keys');
my $in_order = 1;
for my $k (keys %seq)
{
	my @s = @{ $seq{$k} };
	$in_order = 0 unless "@s" eq join(' ', sort { $a <=> $b } @s) && @s == 10;
}
ok($in_order, 'down: each key delivered once, in order');
is(sq(q{SELECT count(*) FROM dtx.outbox_dead WHERE sink = 'flaky'}), '0', 'down: nothing dead-lettered');
ok(sq(q{SELECT count(*) FROM dtx.outbox_sink WHERE name = 'flaky' AND failures = 0}) == 1, 'down: failures reset');
note("flaky: " . scalar(@{ received('/flaky') }) . " requests for 40 messages ($n_open before the breaker opened)");

# --- a poison message: dead at once, the other keys flow, then replayed ----------------

sink('p', '/p');
http_mode('/p', poison => 'POISON');
sq(q{BEGIN;
    SELECT dtx.outbox_send('p', '{"n": 1, "bad": "POISON"}', 'a');
    SELECT dtx.outbox_send('p', jsonb_build_object('n', g), CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END)
      FROM generate_series(2, 9) g;
    COMMIT});
wait_for(q{SELECT delivered = 8 AND dead = 1 FROM dtx.outbox_status WHERE sink = 'p'},
	'poison: dead-lettered, the eight others delivered');
is(sq(q{SELECT reason || ' ' || last_error FROM dtx.outbox_dead WHERE sink = 'p'}),
	'rejected HTTP 400: {"error": "poison message"}', 'poison: 400 is a rejection, no retries');
is(scalar(grep { $_->{status} == 400 } @{ received('/p') }), 1, 'poison: sent once');
http_mode('/p');
sq(q{SELECT dtx.outbox_replay(message_id) FROM dtx.outbox_dead WHERE sink = 'p'});
wait_for(q{SELECT delivered = 9 AND dead = 0 FROM dtx.outbox_status WHERE sink = 'p'}, 'poison: replayed and delivered');
is(scalar(grep { $_->{status} == 200 && $_->{body}{payload}{n} == 1 } @{ received('/p') }), 1, 'poison: delivered once after replay');

# --- NOTIFY: a listener gets every message, in order --------------------------------------

sq(q{SELECT dtx.sink_create('n', 'notify', '{"channel": "events"}'); SELECT dtx.route_create('n', 'n')});
my ($lin, $lout, $lerr) = ('', '', '');
my $listener = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres') ],
	'<', \$lin, '>', \$lout, '2>', \$lerr);
$lin .= "LISTEN events;\nSELECT 'listening';\n";
$listener->pump until $lout =~ /listening/ || !$listener->pumpable;
sq(q{SELECT dtx.outbox_send('n', jsonb_build_object('n', g), 'k') FROM generate_series(1, 20) g});
sq(q{SELECT dtx.outbox_send('n', jsonb_build_object('n', g)) FROM generate_series(21, 25) g});
wait_for(q{SELECT delivered = 25 FROM dtx.outbox_status WHERE sink = 'n'}, 'notify: delivered');
$lin .= "SELECT 'done';\n";
$listener->pump until $lout =~ /done/ || !$listener->pumpable;
$lin .= "\\q\n";
$listener->finish;
my @notes = map { $json->decode($_)->{payload}{n} } ($lout =~ /payload "(\{.*?\})" received/g);
is_deeply(\@notes, [ 1 .. 25 ], 'notify: the listener got all 25, in order');

# --- SIGHUP: the worker picks up new settings ---------------------------------------------

sink('hup', '/hup');
http_mode('/hup', status => 500);
sq(q{ALTER SYSTEM SET dtx.outbox_max_attempts = 2; SELECT pg_reload_conf()});
usleep(300_000);
sq(q{SELECT dtx.outbox_send('hup', '{"n": 1}')});
wait_for(q{SELECT dead = 1 FROM dtx.outbox_status WHERE sink = 'hup'}, 'SIGHUP: dtx.outbox_max_attempts = 2 is used');
is(scalar(@{ received('/hup') }), 2, 'SIGHUP: two attempts, then the dead letter');
sq(q{ALTER SYSTEM RESET dtx.outbox_max_attempts; SELECT pg_reload_conf()});

# --- shutdown is prompt while requests are in flight -------------------------------------------

sink('hang', '/hang', timeout_ms => 120000);
http_mode('/hang', delay_ms => 60000, fail_times => 1);
sq(q{SELECT dtx.outbox_send('hang', '{"n": 1}')});
wait_for(q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker' AND query LIKE 'outbox: HTTP%' AND state = 'active'},
	'shutdown: a request is in flight');
my $t0 = time;
$node->stop('fast');
my $stop_secs = time - $t0;
cmp_ok($stop_secs, '<', 30, sprintf('shutdown: fast stop took %.1f s, not the 60 s the request would', $stop_secs));
$node->start;
wait_for(q{SELECT delivered = 1 FROM dtx.outbox_status WHERE sink = 'hang'}, 'shutdown: the interrupted message is delivered after the restart');

# --- DROP DATABASE and DROP EXTENSION are not blocked by the worker ------------------------------

sq('CREATE DATABASE other');
sq(qq{CREATE EXTENSION pg_dtx;
     SELECT dtx.sink_create('hang', 'http', '{"url": "$base/hang2", "timeout_ms": 120000}');
     SELECT dtx.route_create('*', 'hang');
     SELECT dtx.outbox_send('x', '{"n": 1}')}, 'other');
http_mode('/hang2', delay_ms => 60000);
wait_for(q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker' AND datname = 'other' AND query LIKE 'outbox: HTTP%'},
	'DROP DATABASE: the worker of "other" has a request in flight');
$t0 = time;
sq('DROP DATABASE other');
cmp_ok(time - $t0, '<', 30, 'DROP DATABASE is not held up by the request in flight');

sink('hang3', '/hang3', timeout_ms => 120000);
http_mode('/hang3', delay_ms => 60000);
sq(q{SELECT dtx.outbox_send('hang3', '{"n": 1}')});
wait_for(q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_dtx worker' AND datname = 'postgres' AND query LIKE 'outbox: HTTP%'},
	'DROP EXTENSION: the worker has a request in flight');
$t0 = time;
sq('DROP EXTENSION pg_dtx CASCADE');
cmp_ok(time - $t0, '<', 30, 'DROP EXTENSION does not wait for the request in flight');
sq('CREATE EXTENSION pg_dtx');
is(sq(q{SELECT count(*) FROM dtx.outbox}), '0', 'a new extension starts empty');

$node->stop('immediate');
$http->signal('TERM');
$http->finish;
unlike(slurp_file($node->logfile), qr/TRAP|server process .* was terminated by signal (?!9)/,
	'no assertion failure, no backend crash');
done_testing();

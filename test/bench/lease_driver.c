/*-------------------------------------------------------------------------
 *
 * lease_driver.c
 *	  Client side of test/bench/leases: THREADS threads, each with its own
 *	  connection, run acquire/release pairs for SECONDS and the totals are
 *	  printed as one line of key=value pairs.
 *
 *	  lease_driver uncontended dtx|advisory|redis TARGET SECONDS THREADS
 *	  lease_driver contended   dtx|advisory       TARGET SECONDS THREADS
 *
 * TARGET is a libpq connection string, or HOST:PORT for redis.
 *
 * uncontended: every thread works on its own names (bench-<thread>-<i % 64>;
 * advisory keys 1000 + 64 * thread + i % 64; the same strings as redis
 * keys), one acquire then one release per pair, all through prepared
 * statements (PostgreSQL) or EVALSHA (redis, release by the standard
 * compare-and-delete script).  Checks: every acquire succeeds, every
 * release reports that it released, and (pg_dtx) the tokens one thread
 * sees strictly increase (they come from one counter per database).
 *
 * contended: every thread loops acquire('hot', wait 60 s) / release on ONE
 * name (advisory: pg_advisory_lock(42) / pg_advisory_unlock(42)).  The
 * driver keeps a shared "holder" (set when an acquire returns, cleared just
 * before the release is sent) and counts
 *	  overlaps         an acquire returned while another thread held it;
 *	  order errors     (pg_dtx) a token not above the previous holder's;
 *	  release false    a release that did not release (the lease had been
 *	                   given to someone else meanwhile);
 *	  self             the same thread got it twice in a row (nobody was
 *	                   queued when it released: not an error).
 * Latencies, in microseconds:
 *	  acquire          duration of each acquire call, queueing included;
 *	  handoff          from the moment the previous holder sent its release
 *	                   to the moment this acquire returned.
 *
 * Only pairs (handoffs) completed before the deadline are counted; the
 * threads then finish what they hold and stop.  Exit status 0 when the run
 * happened (the checks are reported, not judged), 1 on a set-up failure.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define NAMES_PER_THREAD	64
#define MAX_ERRORS			1000	/* per thread, then it gives up */

typedef enum
{
	V_DTX, V_ADVISORY, V_REDIS
} Variant;

static Variant variant;
static bool contended;
static const char *target;
static double seconds;
static int nthreads;

static pthread_barrier_t ready_barrier;
static pthread_barrier_t go_barrier;
static int64_t deadline_us;

/* the shared state of the contended run */
static pthread_mutex_t hold_mutex = PTHREAD_MUTEX_INITIALIZER;
static int	holder = -1;
static int64_t last_token = 0;
static int64_t last_release_us = 0;
static int	last_releaser = -1;

static pthread_mutex_t msg_mutex = PTHREAD_MUTEX_INITIALIZER;
static int	messages = 0;

typedef struct Samples
{
	int64_t    *v;
	size_t		n;
	size_t		cap;
} Samples;

typedef struct Thread
{
	int			id;
	pthread_t	th;
	bool		setup_failed;
	long		ops;
	long		errors;
	long		order_errors;
	long		overlaps;
	long		release_false;
	long		self;
	Samples		acquire;
	Samples		handoff;
} Thread;

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* the first few problems go to stderr, the rest are only counted */
static void
complain(Thread *t, const char *fmt,...)
{
	va_list		ap;

	pthread_mutex_lock(&msg_mutex);
	if (messages++ < 10)
	{
		fprintf(stderr, "lease_driver: thread %d: ", t->id);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	pthread_mutex_unlock(&msg_mutex);
}

static void
add_sample(Samples *s, int64_t v)
{
	if (s->n == s->cap)
	{
		s->cap = s->cap ? s->cap * 2 : 4096;
		s->v = realloc(s->v, s->cap * sizeof(int64_t));
		if (s->v == NULL)
		{
			perror("realloc");
			exit(1);
		}
	}
	s->v[s->n++] = v;
}

static int
cmp_int64(const void *a, const void *b)
{
	int64_t		x = *(const int64_t *) a;
	int64_t		y = *(const int64_t *) b;

	return (x > y) - (x < y);
}

/* nearest-rank percentile of a sorted array; -1 when empty */
static int64_t
percentile(const Samples *s, double p)
{
	size_t		rank;

	if (s->n == 0)
		return -1;
	rank = (size_t) (p / 100.0 * s->n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > s->n)
		rank = s->n;
	return s->v[rank - 1];
}

/* ------------------------------------------------------------------------
 * PostgreSQL
 * ------------------------------------------------------------------------
 */

static PGconn *
pg_connect(Thread *t)
{
	PGconn	   *conn = PQconnectdb(target);

	if (PQstatus(conn) != CONNECTION_OK)
	{
		complain(t, "connection failed: %s", PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

static bool
pg_prepare(Thread *t, PGconn *conn, const char *name, const char *sql, int nparams)
{
	PGresult   *res = PQprepare(conn, name, sql, nparams, NULL);
	bool		ok = PQresultStatus(res) == PGRES_COMMAND_OK;

	if (!ok)
		complain(t, "prepare %s failed: %s", name, PQerrorMessage(conn));
	PQclear(res);
	return ok;
}

/*
 * Runs a prepared statement that returns one value; copies it into out
 * (NULL → "", *isnull set).  Returns false on error (counted and reported).
 */
static bool
pg_run(Thread *t, PGconn *conn, const char *stmt, int nparams,
	   const char *const *params, char *out, size_t outlen, bool *isnull)
{
	PGresult   *res = PQexecPrepared(conn, stmt, nparams, params, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
		PQnfields(res) != 1)
	{
		t->errors++;
		complain(t, "%s failed: %s", stmt,
				 PQresultStatus(res) == PGRES_TUPLES_OK ?
				 "unexpected result shape" : PQerrorMessage(conn));
		PQclear(res);
		return false;
	}
	*isnull = PQgetisnull(res, 0, 0);
	snprintf(out, outlen, "%s", *isnull ? "" : PQgetvalue(res, 0, 0));
	PQclear(res);
	return true;
}

/* ------------------------------------------------------------------------
 * Redis, raw RESP over TCP
 * ------------------------------------------------------------------------
 */

typedef struct Redis
{
	int			fd;
	char		buf[65536];
	size_t		start;
	size_t		end;
} Redis;

typedef struct Reply
{
	char		type;			/* '+', '-', ':', '$' */
	bool		nil;
	long long	integer;
	char		str[512];
} Reply;

static Redis *
redis_connect(Thread *t)
{
	char		host[256];
	char	   *colon;
	struct addrinfo hints = {0};
	struct addrinfo *ai;
	Redis	   *r;
	int			one = 1;
	int			rc;

	snprintf(host, sizeof(host), "%s", target);
	colon = strrchr(host, ':');
	if (colon == NULL)
	{
		complain(t, "redis target must be HOST:PORT, not \"%s\"", target);
		return NULL;
	}
	*colon = '\0';
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(host, colon + 1, &hints, &ai)) != 0)
	{
		complain(t, "getaddrinfo: %s", gai_strerror(rc));
		return NULL;
	}
	r = calloc(1, sizeof(Redis));
	r->fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
	if (r->fd < 0 || connect(r->fd, ai->ai_addr, ai->ai_addrlen) != 0)
	{
		complain(t, "redis connect: %s", strerror(errno));
		freeaddrinfo(ai);
		free(r);
		return NULL;
	}
	freeaddrinfo(ai);
	setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return r;
}

static bool
redis_write_all(Redis *r, const char *p, size_t n)
{
	while (n > 0)
	{
		ssize_t		w = write(r->fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= w;
	}
	return true;
}

/* one line without its CRLF into line; false on EOF or error */
static bool
redis_read_line(Redis *r, char *line, size_t len)
{
	for (;;)
	{
		size_t		i;

		for (i = r->start; i + 1 < r->end; i++)
		{
			if (r->buf[i] == '\r' && r->buf[i + 1] == '\n')
			{
				size_t		n = i - r->start;

				if (n >= len)
					n = len - 1;
				memcpy(line, r->buf + r->start, n);
				line[n] = '\0';
				r->start = i + 2;
				return true;
			}
		}
		if (r->start > 0)
		{
			memmove(r->buf, r->buf + r->start, r->end - r->start);
			r->end -= r->start;
			r->start = 0;
		}
		if (r->end == sizeof(r->buf))
			return false;
		{
			ssize_t		got = read(r->fd, r->buf + r->end, sizeof(r->buf) - r->end);

			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0)
				return false;
			r->end += got;
		}
	}
}

/* sends one command (argv of C strings) and reads its reply */
static bool
redis_command(Redis *r, Reply *reply, int argc, const char *const *argv)
{
	char		out[2048];
	size_t		n;
	char		line[256];
	int			i;

	n = snprintf(out, sizeof(out), "*%d\r\n", argc);
	for (i = 0; i < argc; i++)
	{
		size_t		len = strlen(argv[i]);

		if (n + len + 32 > sizeof(out))
			return false;
		n += snprintf(out + n, sizeof(out) - n, "$%zu\r\n%s\r\n", len, argv[i]);
	}
	if (!redis_write_all(r, out, n))
		return false;
	if (!redis_read_line(r, line, sizeof(line)))
		return false;
	memset(reply, 0, sizeof(*reply));
	reply->type = line[0];
	switch (line[0])
	{
		case '+':
		case '-':
			snprintf(reply->str, sizeof(reply->str), "%s", line + 1);
			return true;
		case ':':
			reply->integer = strtoll(line + 1, NULL, 10);
			return true;
		case '$':
			if (strtol(line + 1, NULL, 10) < 0)
			{
				reply->nil = true;
				return true;
			}
			/* bulk strings of this driver are short: one line */
			return redis_read_line(r, reply->str, sizeof(reply->str));
		default:
			snprintf(reply->str, sizeof(reply->str), "unexpected reply: %s", line);
			reply->type = '-';
			return true;
	}
}

static const char release_script[] =
"if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

/* ------------------------------------------------------------------------
 * The threads
 * ------------------------------------------------------------------------
 */

static void
uncontended_pg(Thread *t, PGconn *conn)
{
	long		i;
	int64_t		prev_token = 0;

	for (i = 0; now_us() < deadline_us && t->errors < MAX_ERRORS; i++)
	{
		char		name[64];
		char		val[64];
		bool		isnull;
		const char *p[2];

		if (variant == V_DTX)
		{
			int64_t		token;

			snprintf(name, sizeof(name), "bench-%d-%ld", t->id, i % NAMES_PER_THREAD);
			p[0] = name;
			if (!pg_run(t, conn, "acquire", 1, p, val, sizeof(val), &isnull))
				goto broken;
			if (isnull)
			{
				t->errors++;
				complain(t, "lease %s not acquired (token NULL)", name);
				continue;
			}
			token = strtoll(val, NULL, 10);
			if (token <= prev_token)
			{
				t->order_errors++;
				complain(t, "token %" PRId64 " after %" PRId64, token, prev_token);
			}
			prev_token = token;
			p[1] = val;
			if (!pg_run(t, conn, "release", 2, p, val, sizeof(val), &isnull))
				goto broken;
		}
		else
		{
			snprintf(name, sizeof(name), "%ld", 1000 + (long) NAMES_PER_THREAD * t->id + i % NAMES_PER_THREAD);
			p[0] = name;
			if (!pg_run(t, conn, "acquire", 1, p, val, sizeof(val), &isnull))
				goto broken;
			if (strcmp(val, "t") != 0)
			{
				t->errors++;
				complain(t, "advisory lock %s not acquired", name);
				continue;
			}
			if (!pg_run(t, conn, "release", 1, p, val, sizeof(val), &isnull))
				goto broken;
		}
		if (strcmp(val, "t") != 0)
		{
			t->release_false++;
			complain(t, "release of %s returned %s", name, val);
		}
		if (now_us() <= deadline_us)
			t->ops++;
		continue;
broken:
		if (PQstatus(conn) != CONNECTION_OK)
			return;
	}
}

static void
uncontended_redis(Thread *t, Redis *r, const char *sha)
{
	long		i;

	for (i = 0; now_us() < deadline_us && t->errors < MAX_ERRORS; i++)
	{
		char		key[64];
		char		val[64];
		Reply		rep;

		snprintf(key, sizeof(key), "bench-%d-%ld", t->id, i % NAMES_PER_THREAD);
		snprintf(val, sizeof(val), "%d:%ld", t->id, i);
		{
			const char *argv[] = {"SET", key, val, "NX", "PX", "30000"};

			if (!redis_command(r, &rep, 6, argv))
			{
				t->errors++;
				complain(t, "redis connection lost");
				return;
			}
		}
		if (rep.type != '+' || strcmp(rep.str, "OK") != 0)
		{
			t->errors++;
			complain(t, "SET %s NX returned %c%s", key, rep.type, rep.nil ? "nil" : rep.str);
			continue;
		}
		{
			const char *argv[] = {"EVALSHA", sha, "1", key, val};

			if (!redis_command(r, &rep, 5, argv))
			{
				t->errors++;
				complain(t, "redis connection lost");
				return;
			}
		}
		if (rep.type == '-')
		{
			t->errors++;
			complain(t, "EVALSHA failed: %s", rep.str);
			continue;
		}
		if (rep.type != ':' || rep.integer != 1)
		{
			t->release_false++;
			complain(t, "release of %s returned %lld", key, rep.integer);
		}
		if (now_us() <= deadline_us)
			t->ops++;
	}
}

static void
contended_pg(Thread *t, PGconn *conn)
{
	while (now_us() < deadline_us && t->errors < MAX_ERRORS)
	{
		char		token[64];
		char		val[64];
		bool		isnull;
		const char *p[2] = {"hot", token};
		int64_t		t0, t1;
		int64_t		gap = -1;
		bool		again = false;

		t0 = now_us();
		if (!pg_run(t, conn, "acquire", variant == V_DTX ? 1 : 0, p,
					token, sizeof(token), &isnull))
		{
			if (PQstatus(conn) != CONNECTION_OK)
				return;
			continue;
		}
		t1 = now_us();
		if (variant == V_DTX && isnull)
		{
			t->errors++;
			complain(t, "lease hot not acquired within 60 s");
			continue;
		}

		pthread_mutex_lock(&hold_mutex);
		if (holder != -1)
		{
			t->overlaps++;
			complain(t, "acquired while thread %d holds it", holder);
		}
		holder = t->id;
		if (variant == V_DTX)
		{
			int64_t		tok = strtoll(token, NULL, 10);

			if (tok <= last_token)
			{
				t->order_errors++;
				complain(t, "token %" PRId64 " after %" PRId64, tok, last_token);
			}
			last_token = tok;
		}
		if (last_releaser >= 0)
		{
			gap = t1 - last_release_us;
			again = last_releaser == t->id;
		}
		pthread_mutex_unlock(&hold_mutex);

		if (t1 <= deadline_us)
		{
			t->ops++;
			if (again)
				t->self++;
			add_sample(&t->acquire, t1 - t0);
			if (gap >= 0)
				add_sample(&t->handoff, gap);
		}

		pthread_mutex_lock(&hold_mutex);
		holder = -1;
		last_releaser = t->id;
		last_release_us = now_us();
		pthread_mutex_unlock(&hold_mutex);

		if (!pg_run(t, conn, "release", variant == V_DTX ? 2 : 0, p,
					val, sizeof(val), &isnull))
		{
			if (PQstatus(conn) != CONNECTION_OK)
				return;
			continue;
		}
		if (strcmp(val, "t") != 0)
		{
			t->release_false++;
			complain(t, "release returned %s", isnull ? "NULL" : val);
		}
	}
}

static void *
thread_main(void *arg)
{
	Thread	   *t = arg;
	PGconn	   *conn = NULL;
	Redis	   *r = NULL;
	char		sha[512] = "";

	if (variant == V_REDIS)
	{
		Reply		rep = {0};
		const char *argv[] = {"SCRIPT", "LOAD", release_script};

		r = redis_connect(t);
		if (r == NULL)
			t->setup_failed = true;
		else if (!redis_command(r, &rep, 3, argv) || rep.type != '$' || rep.nil)
		{
			complain(t, "SCRIPT LOAD failed: %s", rep.str);
			t->setup_failed = true;
		}
		else
			snprintf(sha, sizeof(sha), "%s", rep.str);
	}
	else
	{
		bool		ok;

		conn = pg_connect(t);
		if (conn == NULL)
			ok = false;
		else if (variant == V_DTX && !contended)
			ok = pg_prepare(t, conn, "acquire",
							"SELECT token FROM dtx.lease_acquire($1::text, '30 s'::interval)", 1) &&
				pg_prepare(t, conn, "release",
						   "SELECT dtx.lease_release($1::text, $2::bigint)", 2);
		else if (variant == V_DTX)
			ok = pg_prepare(t, conn, "acquire",
							"SELECT token FROM dtx.lease_acquire($1::text, '30 s'::interval, wait => '60 s'::interval)", 1) &&
				pg_prepare(t, conn, "release",
						   "SELECT dtx.lease_release($1::text, $2::bigint)", 2);
		else if (!contended)
			ok = pg_prepare(t, conn, "acquire", "SELECT pg_try_advisory_lock($1::bigint)", 1) &&
				pg_prepare(t, conn, "release", "SELECT pg_advisory_unlock($1::bigint)", 1);
		else
			ok = pg_prepare(t, conn, "acquire", "SELECT pg_advisory_lock(42::bigint)", 0) &&
				pg_prepare(t, conn, "release", "SELECT pg_advisory_unlock(42::bigint)", 0);
		t->setup_failed = !ok;
	}

	pthread_barrier_wait(&ready_barrier);
	pthread_barrier_wait(&go_barrier);

	if (!t->setup_failed)
	{
		if (variant == V_REDIS)
			uncontended_redis(t, r, sha);
		else if (contended)
			contended_pg(t, conn);
		else
			uncontended_pg(t, conn);
	}

	if (conn)
		PQfinish(conn);
	if (r)
	{
		close(r->fd);
		free(r);
	}
	return NULL;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: lease_driver uncontended dtx|advisory|redis TARGET SECONDS THREADS\n"
			"       lease_driver contended   dtx|advisory       TARGET SECONDS THREADS\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	Thread	   *threads;
	Samples		acquire = {0};
	Samples		handoff = {0};
	long		ops = 0, errors = 0, order_errors = 0, overlaps = 0,
				release_false = 0, self = 0;
	bool		setup_failed = false;
	int64_t		start;
	int			i;

	if (argc != 6)
		usage();
	if (strcmp(argv[1], "uncontended") == 0)
		contended = false;
	else if (strcmp(argv[1], "contended") == 0)
		contended = true;
	else
		usage();
	if (strcmp(argv[2], "dtx") == 0)
		variant = V_DTX;
	else if (strcmp(argv[2], "advisory") == 0)
		variant = V_ADVISORY;
	else if (strcmp(argv[2], "redis") == 0 && !contended)
		variant = V_REDIS;
	else
		usage();
	target = argv[3];
	seconds = atof(argv[4]);
	nthreads = atoi(argv[5]);
	if (seconds <= 0 || nthreads < 1)
		usage();

	threads = calloc(nthreads, sizeof(Thread));
	pthread_barrier_init(&ready_barrier, NULL, nthreads + 1);
	pthread_barrier_init(&go_barrier, NULL, nthreads + 1);
	for (i = 0; i < nthreads; i++)
	{
		threads[i].id = i;
		if (pthread_create(&threads[i].th, NULL, thread_main, &threads[i]) != 0)
		{
			perror("pthread_create");
			return 1;
		}
	}
	/* everybody connected and prepared: start the clock */
	pthread_barrier_wait(&ready_barrier);
	start = now_us();
	deadline_us = start + (int64_t) (seconds * 1e6);
	pthread_barrier_wait(&go_barrier);

	for (i = 0; i < nthreads; i++)
	{
		Thread	   *t = &threads[i];
		size_t		j;

		pthread_join(t->th, NULL);
		setup_failed |= t->setup_failed;
		ops += t->ops;
		errors += t->errors;
		order_errors += t->order_errors;
		overlaps += t->overlaps;
		release_false += t->release_false;
		self += t->self;
		for (j = 0; j < t->acquire.n; j++)
			add_sample(&acquire, t->acquire.v[j]);
		for (j = 0; j < t->handoff.n; j++)
			add_sample(&handoff, t->handoff.v[j]);
	}
	if (setup_failed)
	{
		fprintf(stderr, "lease_driver: set-up failed\n");
		return 1;
	}

	printf("ops=%ld seconds=%.3f ops_per_s=%.1f errors=%ld release_false=%ld order_errors=%ld",
		   ops, seconds, ops / seconds, errors, release_false, order_errors);
	if (contended)
	{
		qsort(acquire.v, acquire.n, sizeof(int64_t), cmp_int64);
		qsort(handoff.v, handoff.n, sizeof(int64_t), cmp_int64);
		printf(" overlaps=%ld self=%ld acquire_p50_us=%" PRId64 " acquire_p99_us=%" PRId64
			   " handoff_p50_us=%" PRId64 " handoff_p99_us=%" PRId64,
			   overlaps, self,
			   percentile(&acquire, 50), percentile(&acquire, 99),
			   percentile(&handoff, 50), percentile(&handoff, 99));
	}
	printf("\n");
	return 0;
}

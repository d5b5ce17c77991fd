/*-------------------------------------------------------------------------
 *
 * outbox_relay.c
 *	  The outbox relay users write by hand, for test/bench/outbox to compare
 *	  pg_dtx's dispatcher with: a loop over a plain outbox table that
 *
 *		BEGIN;
 *		SELECT ... FROM SRC_TABLE ORDER BY id LIMIT BATCH FOR UPDATE SKIP LOCKED;
 *		-- on the target, autocommit:
 *		INSERT INTO DST_TABLE ... SELECT * FROM unnest($1, ..., $6)
 *		    ON CONFLICT (id) DO NOTHING;
 *		DELETE FROM SRC_TABLE WHERE id = ANY ($1);
 *		COMMIT;
 *
 *	  and sleeps POLL_MS when a claim finds nothing.  At-least-once, like
 *	  every such relay: a crash between the remote INSERT and the COMMIT
 *	  sends the batch again, and the target's primary key absorbs it.
 *
 *	  outbox_relay SRC_CONNINFO DST_CONNINFO SRC_TABLE DST_TABLE BATCH POLL_MS
 *	               MAX_MESSAGES MAX_SECONDS
 *
 * SRC_TABLE has columns (id bigint PRIMARY KEY, topic text, key text,
 * payload jsonb, headers jsonb, created_at timestamptz); DST_TABLE at least
 * the same six.  All three statements are prepared; the rows cross as text,
 * the batch goes to the target as six array parameters in one statement
 * (the same shape as pg_dtx's postgres sink, so that the two move the same
 * bytes), which is a generous relay: the usual hand-written one is a script
 * sending one INSERT per row or a multi-row VALUES list.  Its target
 * connection runs with synchronous_commit = on, as pg_dtx's postgres sink
 * does, so that both delete a message only once its delivery is durable.
 *
 * It stops once MAX_MESSAGES (0: no limit) rows have been moved, after
 * MAX_SECONDS, or -- SIGTERM or SIGINT -- at the first claim that finds the
 * table empty (so "kill -TERM" means: drain, then stop).  Then it prints one
 * line of key=value pairs:
 *
 *	  start=EPOCH moved=N batches=B empty_polls=P seconds=S msgs_per_s=R errors=E
 *
 * start is the wall clock (seconds since the epoch, microseconds) just
 * before the first claim; seconds runs from there to the last COMMIT.  An
 * error rolls the batch back, is reported on stderr and counted, and the
 * loop goes on after POLL_MS (reconnecting if needed); exit status 1 after
 * 100 errors or when a connection cannot be made at all.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#define MAX_ERRORS 100

static volatile sig_atomic_t stop_requested = 0;

static void
on_signal(int sig)
{
	(void) sig;
	stop_requested = 1;
}

static double
wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double
mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* sleep ms milliseconds, or less when a signal arrives */
static void
sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};

	(void) nanosleep(&ts, NULL);
}

/* A growing string */
typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

static void
buf_reserve(Buf *b, size_t more)
{
	if (b->len + more + 1 > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 4096;

		while (b->len + more + 1 > cap)
			cap *= 2;
		b->data = realloc(b->data, cap);
		if (b->data == NULL)
		{
			perror("realloc");
			exit(1);
		}
		b->cap = cap;
	}
}

static void
buf_putc(Buf *b, char c)
{
	buf_reserve(b, 1);
	b->data[b->len++] = c;
	b->data[b->len] = '\0';
}

static void
buf_reset(Buf *b)
{
	b->len = 0;
	buf_reserve(b, 0);
	b->data[0] = '\0';
	buf_putc(b, '{');
}

/* append one element of an array literal (NULL when v is NULL) */
static void
buf_elem(Buf *b, const char *v)
{
	const char *p;

	if (b->len > 1)
		buf_putc(b, ',');
	if (v == NULL)
	{
		buf_reserve(b, 4);
		memcpy(b->data + b->len, "NULL", 5);
		b->len += 4;
		return;
	}
	buf_putc(b, '"');
	for (p = v; *p; p++)
	{
		if (*p == '"' || *p == '\\')
			buf_putc(b, '\\');
		buf_putc(b, *p);
	}
	buf_putc(b, '"');
}

static PGconn *
connect_to(const char *conninfo, const char *what)
{
	PGconn	   *c = PQconnectdb(conninfo);

	if (PQstatus(c) != CONNECTION_OK)
	{
		fprintf(stderr, "outbox_relay: cannot connect to %s: %s", what, PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

static bool
prepare(PGconn *c, const char *name, const char *sql, int nparams)
{
	PGresult   *r = PQprepare(c, name, sql, nparams, NULL);
	bool		ok = PQresultStatus(r) == PGRES_COMMAND_OK;

	if (!ok)
		fprintf(stderr, "outbox_relay: prepare %s: %s", name, PQerrorMessage(c));
	PQclear(r);
	return ok;
}

/* run a command that returns no rows; false (reported) on failure */
static bool
command(PGconn *c, const char *sql)
{
	PGresult   *r = PQexec(c, sql);
	bool		ok = PQresultStatus(r) == PGRES_COMMAND_OK;

	if (!ok)
		fprintf(stderr, "outbox_relay: %s: %s", sql, PQerrorMessage(c));
	PQclear(r);
	return ok;
}

int
main(int argc, char **argv)
{
	const char *src_info,
			   *dst_info,
			   *src_table,
			   *dst_table;
	int			batch,
				poll_ms;
	long		max_messages;
	double		max_seconds;
	PGconn	   *src = NULL,
			   *dst = NULL;
	char		sql[1024];
	char		limit[32];
	Buf			arr[6] = {{0}};
	long		moved = 0,
				batches = 0,
				empty_polls = 0,
				errors = 0;
	double		start_wall,
				start,
				last = 0;

	if (argc != 9)
	{
		fprintf(stderr, "usage: outbox_relay SRC_CONNINFO DST_CONNINFO SRC_TABLE DST_TABLE BATCH POLL_MS MAX_MESSAGES MAX_SECONDS\n");
		return 2;
	}
	src_info = argv[1];
	dst_info = argv[2];
	src_table = argv[3];
	dst_table = argv[4];
	batch = atoi(argv[5]);
	poll_ms = atoi(argv[6]);
	max_messages = atol(argv[7]);
	max_seconds = atof(argv[8]);
	if (batch < 1 || poll_ms < 0 || max_seconds <= 0)
	{
		fprintf(stderr, "outbox_relay: bad arguments\n");
		return 2;
	}
	snprintf(limit, sizeof(limit), "%d", batch);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);

	start_wall = wall_now();
	start = mono_now();
	while (mono_now() - start < max_seconds && (max_messages == 0 || moved < max_messages))
	{
		PGresult   *claim = NULL,
				   *r;
		const char *params[6];
		int			n,
					i,
					j;

		if (errors >= MAX_ERRORS)
		{
			fprintf(stderr, "outbox_relay: giving up after %ld errors\n", errors);
			return 1;
		}
		/* (re)connect and prepare */
		if (src == NULL || PQstatus(src) != CONNECTION_OK)
		{
			if (src)
				PQfinish(src);
			if ((src = connect_to(src_info, "the source")) == NULL)
				return 1;
			snprintf(sql, sizeof(sql),
					 "SELECT id, topic, key, payload::text, headers::text, created_at::text"
					 " FROM %s ORDER BY id LIMIT $1::int FOR UPDATE SKIP LOCKED", src_table);
			if (!prepare(src, "claim", sql, 1))
				return 1;
			snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE id = ANY ($1::bigint[])", src_table);
			if (!prepare(src, "done", sql, 1))
				return 1;
		}
		if (dst == NULL || PQstatus(dst) != CONNECTION_OK)
		{
			if (dst)
				PQfinish(dst);
			if ((dst = connect_to(dst_info, "the target")) == NULL)
				return 1;
			snprintf(sql, sizeof(sql),
					 "INSERT INTO %s (id, topic, key, payload, headers, created_at)"
					 " SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[],"
					 " $4::jsonb[], $5::jsonb[], $6::timestamptz[])"
					 " ON CONFLICT (id) DO NOTHING", dst_table);
			if (!prepare(dst, "put", sql, 6) || !command(dst, "SET synchronous_commit = on"))
				return 1;
		}

		/* claim */
		if (!command(src, "BEGIN"))
			goto fail;
		params[0] = limit;
		claim = PQexecPrepared(src, "claim", 1, params, NULL, NULL, 0);
		if (PQresultStatus(claim) != PGRES_TUPLES_OK)
		{
			fprintf(stderr, "outbox_relay: claim: %s", PQerrorMessage(src));
			goto fail;
		}
		n = PQntuples(claim);
		if (n == 0)
		{
			PQclear(claim);
			claim = NULL;
			if (!command(src, "COMMIT"))
				goto fail;
			empty_polls++;
			if (stop_requested)
				break;
			sleep_ms(poll_ms);
			continue;
		}

		/* send: one statement, six arrays */
		for (j = 0; j < 6; j++)
			buf_reset(&arr[j]);
		for (i = 0; i < n; i++)
			for (j = 0; j < 6; j++)
				buf_elem(&arr[j], PQgetisnull(claim, i, j) ? NULL : PQgetvalue(claim, i, j));
		for (j = 0; j < 6; j++)
		{
			buf_putc(&arr[j], '}');
			params[j] = arr[j].data;
		}
		r = PQexecPrepared(dst, "put", 6, params, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "outbox_relay: remote insert: %s", PQerrorMessage(dst));
			PQclear(r);
			goto fail;
		}
		PQclear(r);

		/* delete what was sent, commit */
		params[0] = arr[0].data;
		r = PQexecPrepared(src, "done", 1, params, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "outbox_relay: delete: %s", PQerrorMessage(src));
			PQclear(r);
			goto fail;
		}
		PQclear(r);
		if (!command(src, "COMMIT"))
			goto fail;
		PQclear(claim);
		moved += n;
		batches++;
		last = mono_now();
		continue;

fail:
		if (claim)
			PQclear(claim);
		errors++;
		if (PQstatus(src) == CONNECTION_OK && PQtransactionStatus(src) != PQTRANS_IDLE)
			(void) command(src, "ROLLBACK");
		sleep_ms(poll_ms > 0 ? poll_ms : 100);
	}

	if (last == 0)
		last = mono_now();
	printf("start=%.6f moved=%ld batches=%ld empty_polls=%ld seconds=%.3f msgs_per_s=%.1f errors=%ld\n",
		   start_wall, moved, batches, empty_polls, last - start,
		   last > start ? moved / (last - start) : 0.0, errors);
	PQfinish(src);
	PQfinish(dst);
	return 0;
}

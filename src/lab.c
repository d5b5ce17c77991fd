/*-------------------------------------------------------------------------
 *
 * lab.c
 *	  The isolation lab: schedules of statements run by real, concurrent
 *	  sessions of the calling database, with every step's outcome reported.
 *
 * dtx._lab_exec() is the engine under dtx.lab_run(), dtx.lab_write_skew()
 * and dtx.lab_anomalies() (their SQL parts validate the input and read the
 * results).  It works like PostgreSQL's isolationtester:
 *
 * - Sessions are libpq connections back to this server, as the current
 *   role, with no password: the server's Unix socket and port, or
 *   dtx.lab_conninfo.  The role and database names are values, never
 *   connection strings (expand_dbname = 0).  One more connection (the
 *   "admin") creates a scratch schema dtx_lab_<pid>_<role oid>, runs the
 *   setup, reads the final state, evaluates the invariant, runs the
 *   teardown and drops the schema.  Every session's search_path is that
 *   schema and its default_transaction_isolation the level asked for.
 * - Steps are sent in order with PQsendQuery.  After each one the engine
 *   "settles": it waits until every session with a statement in flight has
 *   either finished or is blocked by another lab session, as seen in the
 *   lock manager (pg_blocking_pids, pg_safe_snapshot_blocking_pids).  A
 *   blocked step is reported at once and the schedule goes on; when a
 *   later step releases it, its completion is reported with that step's
 *   number (after_step).  A step for a session that is still blocked waits
 *   in that session's queue, as the statement of a real client would, and
 *   runs as soon as the session is free.
 * - Sessions blocked in a cycle are left to PostgreSQL's deadlock detector
 *   (deadlock_timeout); the victim's step reports 40P01.
 * - A step that neither finishes nor blocks within the step timeout is
 *   cancelled and reported as "timeout" (57014).  Steps still blocked when
 *   the schedule ends are cancelled ("cancelled"); sessions still in a
 *   transaction then are rolled back.
 * - COPY has no place in a schedule: the lab ends it from its side
 *   (lab_end_copy) and reports the statement as 0A000; every loop that
 *   reads results ends on COPY states and checks for interrupts.
 * - Nothing is left behind: on any error, including a cancel of the call
 *   itself, in-flight statements are cancelled, the sessions closed and the
 *   scratch schema dropped.  A schema left by a backend that died (kill -9)
 *   is dropped by the next lab call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <poll.h>

#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/formatting.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "lab.h"
#include "pg_dtx.h"

#define LAB_MAX_SESSIONS 8
#define LAB_MAX_STEPS 1000
#define LAB_RESULT_MAX 2000		/* characters of a step's result shown */
#define LAB_POLL_MS 1
#define LAB_INTERNAL_TIMEOUT_MS 60000	/* the lab's own statements */

/* Settings */
static int	lab_step_timeout = 5000;	/* ms */
static char *lab_conninfo = NULL;

typedef struct LabStep
{
	int			session;		/* index into Lab.sessions */
	char	   *sql;
	int			cond_step;		/* -1, or: run only if that step returned */
	int			cond_min;		/* ... at least cond_min rows */
	/* what happened */
	bool		sent;
	bool		done;
	bool		blocked;		/* was reported blocked */
	char	   *outcome;
	char	   *result;
	char	   *sqlstate;
	char	   *message;
	int			ntuples;
	int			after_step;		/* 0: none */
} LabStep;

typedef struct LabSession
{
	char	   *name;
	PGconn	   *conn;
	int			pid;
	int			step;			/* in flight, -1: idle */
	TimestampTz sent_at;
	TimestampTz running_since;	/* last time it was seen blocked, or sent */
	bool		blocked;		/* the in-flight step was reported blocked */
	bool		cancelled;		/* a cancel was sent for the in-flight step */
	const char *cancel_reason;	/* "timeout" or "cancelled" */
	PGresult   *last;			/* last result of the in-flight step */
	PGresult   *error;			/* its first error */
	struct LabError *copy;		/* it was a COPY (0A000), ended by the lab */
	bool		busy;			/* a statement of the lab's own in flight */
	int		   *queue;			/* steps waiting for this session */
	int			nqueue;
	int			qhead;
	uint32		blockers;		/* lab sessions it waits for (bit mask) */
	bool		outside;		/* waits for a process outside the lab */
} LabSession;

typedef struct LabEvent
{
	int			step;			/* 1-based; 0: no step */
	const char *session;
	const char *statement;
	const char *outcome;
	const char *result;
	const char *sqlstate;
	const char *message;
	int			after_step;
	int			key;			/* order within one settle */
	int			seq;
} LabEvent;

/* An error of a statement the lab ran for itself or for the schedule */
typedef struct LabError
{
	char	   *sqlstate;
	char	   *message;
	char	   *detail;
	char	   *hint;
} LabError;

typedef struct Lab
{
	char	   *schema;
	char	   *isolation;
	int			timeout_ms;		/* steps, and the schedule's own SQL */
	int			admin_timeout_ms;	/* the admin's current bound */
	PGconn	   *admin;
	bool		admin_busy;
	bool		schema_made;
	int			nsessions;
	LabSession *sessions;
	int			nsteps;
	LabStep    *steps;
	LabEvent   *events;
	int			nevents;
	int			maxevents;
	int			settle_from;	/* first event of the current settle */
	TimestampTz cycle_since;	/* sessions wait in a cycle since then */
	MemoryContext pollcxt;
} Lab;

static const char *const lab_levels[] = {
	"read uncommitted", "read committed", "repeatable read", "serializable"
};

/* dtx.lab_conninfo must parse as a libpq connection string */
static bool
lab_conninfo_check(char **newval, void **extra, GucSource source)
{
	PQconninfoOption *opts;
	char	   *err = NULL;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	opts = PQconninfoParse(*newval, &err);
	if (opts == NULL)
	{
		GUC_check_errdetail("%s", err ? pchomp(err) : "out of memory");
		if (err)
			PQfreemem(err);
		return false;
	}
	PQconninfoFree(opts);
	return true;
}

void
dtx_lab_define_gucs(void)
{
	DefineCustomIntVariable("dtx.lab_step_timeout",
							"Time an isolation lab step may run without finishing or blocking before it is cancelled.",
							"A schedule's own timeout_ms takes precedence.",
							&lab_step_timeout,
							5000, 10, 3600000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomStringVariable("dtx.lab_conninfo",
							   "Connection string the isolation lab uses to connect back to this server.",
							   "Empty: this server's first Unix socket directory and port. The user and database are always the caller's.",
							   &lab_conninfo,
							   "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY,
							   lab_conninfo_check, NULL, NULL);
}

/* ----------------------------------------------------------------
 * Small helpers
 * ----------------------------------------------------------------
 */

const char *
dtx_lab_isolation(const char *level)
{
	char	   *l = asc_tolower(level, strlen(level));
	int			i;

	l = pstrdup(l);
	/* trim */
	while (*l == ' ')
		l++;
	for (i = strlen(l) - 1; i >= 0 && l[i] == ' '; i--)
		l[i] = '\0';
	for (i = 0; i < lengthof(lab_levels); i++)
		if (strcmp(l, lab_levels[i]) == 0)
			return lab_levels[i];
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown isolation level \"%s\"", level),
			 errhint("Use read committed, repeatable read or serializable.")));
	return NULL;				/* keep compiler quiet */
}

static void
lab_notice_ignore(void *arg, const char *message)
{
}

static int
lab_sqlstate_code(const char *s)
{
	if (s == NULL || strlen(s) != 5)
		return ERRCODE_INTERNAL_ERROR;
	return MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4]);
}

static char *
lab_pq_message(PGconn *conn)
{
	char	   *m = pstrdup(PQerrorMessage(conn));
	int			n = strlen(m);

	while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' '))
		m[--n] = '\0';
	return m;
}

static char *
lab_field(const PGresult *r, int field)
{
	char	   *v = PQresultErrorField(r, field);

	return v ? pstrdup(v) : NULL;
}

static void
lab_event(Lab *lab, int step, const char *session, const char *statement,
		  const char *outcome, const char *result, const char *sqlstate,
		  const char *message, int after_step, int key)
{
	LabEvent   *e;

	if (lab->nevents == lab->maxevents)
	{
		lab->maxevents *= 2;
		lab->events = repalloc(lab->events, sizeof(LabEvent) * lab->maxevents);
	}
	e = &lab->events[lab->nevents];
	e->step = step;
	e->session = session;
	e->statement = statement;
	e->outcome = outcome;
	e->result = result;
	e->sqlstate = sqlstate;
	e->message = message;
	e->after_step = after_step;
	e->key = key;
	e->seq = lab->nevents++;
}

static int
lab_event_cmp(const void *a, const void *b)
{
	const LabEvent *x = a;
	const LabEvent *y = b;

	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

/*
 * Rows of a result as text: "(1,10), (2,20)"; one column: "alice, bob";
 * none: "(no rows)"; a statement without rows: its command tag.
 */
static char *
lab_format(const PGresult *r, int *ntuples)
{
	StringInfoData buf;
	int			nrows = PQntuples(r);
	int			ncols = PQnfields(r);
	int			i,
				j;

	*ntuples = 0;
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		return pstrdup(PQcmdStatus((PGresult *) r));
	*ntuples = nrows;
	if (nrows == 0)
		return pstrdup("(no rows)");
	initStringInfo(&buf);
	for (i = 0; i < nrows; i++)
	{
		if (buf.len > LAB_RESULT_MAX)
		{
			appendStringInfo(&buf, ", ... (%d rows)", nrows);
			break;
		}
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		if (ncols != 1)
			appendStringInfoChar(&buf, '(');
		for (j = 0; j < ncols; j++)
		{
			if (j > 0)
				appendStringInfoChar(&buf, ',');
			appendStringInfoString(&buf, PQgetisnull(r, i, j) ? "null" : PQgetvalue(r, i, j));
		}
		if (ncols != 1)
			appendStringInfoChar(&buf, ')');
	}
	return buf.data;
}

/* ----------------------------------------------------------------
 * Connections
 * ----------------------------------------------------------------
 */

/*
 * lab_connect opens one lab connection back to this server, as the current
 * role, to the current database.
 *
 * The role and database names are passed to libpq as values (expand_dbname
 * = 0): a database named "dbname=postgres user=alice host=..." is a
 * database with that name, never a connection string.  dtx.lab_conninfo
 * (superuser-set) is parsed here, its user and dbname dropped, and its other
 * keywords passed on before ours, so ours win.
 *
 * The connection is made without blocking: the wait checks for interrupts
 * every 10 ms and ends at dtx.connect_timeout.  ERRORs with 08001 (with a
 * hint) when the server refuses the connection or the deadline passes; the
 * half-open PGconn is freed first, also on an interrupt.  The caller owns
 * the returned connection.
 */
static PGconn *
lab_connect(const char *name)
{
	PQconninfoOption *opts = NULL;
	PQconninfoOption *o;
	const char **keys;
	const char **vals;
	int			n = 0;
	int			max = 8;
	char		port[16];
	char	   *host = NULL;
	char		appname[NAMEDATALEN];
	char	   *user = GetUserNameFromId(GetUserId(), false);
	char	   *dbname = get_database_name(MyDatabaseId);
	bool		use_conninfo = lab_conninfo && lab_conninfo[0] != '\0';
	PGconn	   *volatile conn;
	char	   *volatile failure = NULL;

	if (dbname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_DATABASE),
				 errmsg("the current database has been dropped")));
	if (use_conninfo)
	{
		char	   *err = NULL;

		opts = PQconninfoParse(lab_conninfo, &err);
		if (opts == NULL)
		{
			char	   *msg = err ? pchomp(err) : pstrdup("out of memory");

			if (err)
				PQfreemem(err);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid dtx.lab_conninfo"),
					 errdetail_internal("%s", msg)));
		}
		for (o = opts; o->keyword; o++)
			max++;
	}
	keys = palloc(sizeof(char *) * (max + 1));
	vals = palloc(sizeof(char *) * (max + 1));

	if (use_conninfo)
	{
		for (o = opts; o->keyword; o++)
		{
			/* the caller's role and database, whatever the setting says */
			if (o->val == NULL || strcmp(o->keyword, "user") == 0 ||
				strcmp(o->keyword, "dbname") == 0)
				continue;
			keys[n] = o->keyword;
			vals[n++] = o->val;
		}
	}
	else
	{
		/* the first Unix socket directory, else the first listen address */
		char	   *dirs = Unix_socket_directories ? pstrdup(Unix_socket_directories) : pstrdup("");
		char	   *c = strchr(dirs, ',');

		if (c)
			*c = '\0';
		host = dirs;
		while (*host == ' ')
			host++;
		if (*host == '\0')
			host = "localhost";
		snprintf(port, sizeof(port), "%d", PostPortNumber);
		keys[n] = "host";
		vals[n++] = host;
		keys[n] = "port";
		vals[n++] = port;
	}
	snprintf(appname, sizeof(appname), "pg_dtx lab %s", name);
	keys[n] = "application_name";
	vals[n++] = appname;
	keys[n] = "user";
	vals[n++] = user;
	keys[n] = "dbname";
	vals[n++] = dbname;
	keys[n] = NULL;
	vals[n] = NULL;

	/* names are values: never expand dbname as a connection string */
	conn = PQconnectStartParams(keys, vals, 0);
	if (opts)
		PQconninfoFree(opts);	/* libpq copied the values */
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not open isolation lab session \"%s\".", name)));

	PG_TRY();
	{
		TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   dtx_connect_timeout * 1000);
		PostgresPollingStatusType st = PGRES_POLLING_WRITING;

		while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
			   st != PGRES_POLLING_FAILED)
		{
			struct pollfd pfd;

			CHECK_FOR_INTERRUPTS();
			if (GetCurrentTimestamp() >= deadline)
			{
				failure = psprintf("timeout expired after %d s (dtx.connect_timeout)",
								   dtx_connect_timeout);
				break;
			}
			pfd.fd = PQsocket(conn);
			pfd.events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
			pfd.revents = 0;
			if (poll(&pfd, 1, 10) > 0)
				st = PQconnectPoll(conn);
		}
	}
	PG_CATCH();
	{
		PQfinish(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (failure != NULL || PQstatus(conn) != CONNECTION_OK)
	{
		char	   *msg = failure ? failure : lab_pq_message(conn);

		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("could not open isolation lab session \"%s\"", name),
				 errdetail("%s", msg),
				 use_conninfo
				 ? errhint("The lab connects back to this server as role \"%s\" with dtx.lab_conninfo; check that setting, pg_hba.conf, and the role's connection limit.", user)
				 : errhint("The lab connects back to this server as role \"%s\" over its Unix socket, without a password: pg_hba.conf must let that connection in (trust, or peer with a map), and the role must be allowed one more connection; or a superuser can set dtx.lab_conninfo.", user)));
	}
	PQsetNoticeProcessor(conn, lab_notice_ignore, NULL);
	pfree(keys);
	pfree(vals);
	return conn;
}

static void
lab_cancel(PGconn *conn)
{
	PGcancel   *c = PQgetCancel(conn);
	char		errbuf[256];

	if (c)
	{
		(void) PQcancel(c, errbuf, sizeof(errbuf));
		PQfreeCancel(c);
	}
}

/*
 * COPY in the lab.  A step, setup or teardown statement may be a COPY; the
 * lab has no data to send and nowhere to put rows, so it ends the COPY from
 * its side and reports the statement as an error 0A000: COPY FROM STDIN is
 * failed (CopyFail, so the server aborts the statement), the rows of COPY TO
 * STDOUT are read and thrown away.  Either way the connection stays usable.
 * Without this, PQgetResult would return a COPY result forever and every
 * result loop below would spin.
 */
#define LAB_COPY_IN_MESSAGE "COPY FROM STDIN is not supported in the isolation lab; the statement was failed"
#define LAB_COPY_OUT_MESSAGE "COPY TO STDOUT is not supported in the isolation lab; its rows were discarded"
#define LAB_COPY_HINT "Load data with INSERT ... VALUES or INSERT ... SELECT, and read it with SELECT."

typedef enum LabCopyAction
{
	LAB_COPY_READ,				/* ended: read the next result now */
	LAB_COPY_WAIT,				/* rows still coming: wait for the socket */
	LAB_COPY_BROKEN				/* the connection failed */
} LabCopyAction;

static bool
lab_is_copy(const PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);

	return st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH;
}

/*
 * lab_end_copy moves conn, which just returned the COPY result r, out of
 * its COPY state: CopyFail for COPY FROM STDIN (CopyDone first for COPY
 * BOTH), then every row of COPY TO STDOUT that has arrived is read and
 * dropped.  Frees r.  Never raises and never waits: the caller's loop
 * waits on the socket (LAB_COPY_WAIT) with its own deadline and interrupt
 * checks.
 */
static LabCopyAction
lab_end_copy(PGconn *conn, PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);

	PQclear(r);
	if (st == PGRES_COPY_IN)
		return PQputCopyEnd(conn, "COPY is not supported in the isolation lab") == 1
			? LAB_COPY_READ : LAB_COPY_BROKEN;
	if (st == PGRES_COPY_BOTH && PQputCopyEnd(conn, NULL) != 1)
		return LAB_COPY_BROKEN;
	for (;;)
	{
		char	   *row = NULL;
		int			rc = PQgetCopyData(conn, &row, 1);

		if (rc > 0)
		{
			PQfreemem(row);
			continue;
		}
		if (rc == 0)
			return LAB_COPY_WAIT;
		return rc == -1 ? LAB_COPY_READ : LAB_COPY_BROKEN;
	}
}

/* The error a COPY result stands for (see lab_end_copy). */
static LabError *
lab_copy_error(ExecStatusType st)
{
	LabError   *e = palloc0(sizeof(LabError));

	e->sqlstate = "0A000";
	e->message = st == PGRES_COPY_IN ? LAB_COPY_IN_MESSAGE : LAB_COPY_OUT_MESSAGE;
	e->hint = LAB_COPY_HINT;
	return e;
}

static LabError *
lab_result_error(const PGresult *r)
{
	LabError   *e = palloc0(sizeof(LabError));

	e->sqlstate = lab_field(r, PG_DIAG_SQLSTATE);
	e->message = lab_field(r, PG_DIAG_MESSAGE_PRIMARY);
	e->detail = lab_field(r, PG_DIAG_MESSAGE_DETAIL);
	e->hint = lab_field(r, PG_DIAG_MESSAGE_HINT);
	return e;
}

/*
 * Wait up to timeout_ms for conn's results, without ever raising an error
 * (error cleanup uses it); false if they did not all come, the connection
 * failed, or the backend is being terminated (the caller then closes the
 * connection, which ends whatever runs there).  A COPY is ended as in
 * lab_end_copy.
 */
static bool
lab_drain(PGconn *conn, int timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	for (;;)
	{
		struct pollfd pfd;

		/* cannot raise here: stop waiting instead */
		if (ProcDiePending)
			return false;
		if (!PQconsumeInput(conn))
			return false;
		while (!PQisBusy(conn))
		{
			PGresult   *r = PQgetResult(conn);
			LabCopyAction a;

			if (r == NULL)
				return true;
			if (!lab_is_copy(r))
			{
				PQclear(r);
				continue;
			}
			a = lab_end_copy(conn, r);
			if (a == LAB_COPY_BROKEN)
				return false;
			if (a == LAB_COPY_WAIT)
				break;
		}
		if (GetCurrentTimestamp() >= deadline)
			return false;
		pfd.fd = PQsocket(conn);
		pfd.events = POLLIN;
		pfd.revents = 0;
		(void) poll(&pfd, 1, 10);
	}
}

/*
 * lab_exec runs sql on conn (the admin connection, or a session between
 * steps) and returns its last result; the first error goes to *err
 * (palloc'd: a server error's fields, or 0A000 for a COPY, which is ended
 * as in lab_end_copy).  The caller PQclear()s the result.  *busy is true
 * while the statement is in flight, so that lab_close cancels it if an
 * ERROR leaves it there.  The wait checks for interrupts every 10 ms
 * (statement_timeout, a cancel or terminate of the call) and sends a cancel
 * to the statement after timeout_ms; it then raises 57014.  A lost
 * connection raises 08006.
 */
static PGresult *
lab_exec(PGconn *conn, bool *busy, const char *sql, const char *what,
		 int timeout_ms, LabError **err)
{
	PGresult   *last = NULL;
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	bool		cancelled = false;
	bool		finished = false;

	*err = NULL;
	if (!PQsendQuery(conn, sql))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("%s: %s", what, lab_pq_message(conn))));
	*busy = true;
	while (!finished)
	{
		struct pollfd pfd;

		CHECK_FOR_INTERRUPTS();
		if (!PQconsumeInput(conn))
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("%s: %s", what, lab_pq_message(conn))));
		while (!PQisBusy(conn))
		{
			PGresult   *r = PQgetResult(conn);

			if (r == NULL)
			{
				finished = true;
				break;
			}
			if (lab_is_copy(r))
			{
				LabCopyAction a;

				if (*err == NULL)
					*err = lab_copy_error(PQresultStatus(r));
				a = lab_end_copy(conn, r);
				if (a == LAB_COPY_BROKEN)
					ereport(ERROR,
							(errcode(ERRCODE_CONNECTION_FAILURE),
							 errmsg("%s: %s", what, lab_pq_message(conn))));
				if (a == LAB_COPY_WAIT)
					break;
				continue;
			}
			if (PQresultStatus(r) == PGRES_FATAL_ERROR && *err == NULL)
				*err = lab_result_error(r);
			if (PQresultStatus(r) == PGRES_FATAL_ERROR)
				PQclear(r);
			else
			{
				if (last)
					PQclear(last);
				last = r;
			}
		}
		if (finished)
			break;
		if (!cancelled && GetCurrentTimestamp() >= deadline)
		{
			lab_cancel(conn);
			cancelled = true;
		}
		pfd.fd = PQsocket(conn);
		pfd.events = POLLIN;
		pfd.revents = 0;
		(void) poll(&pfd, 1, 10);
	}
	*busy = false;
	if (cancelled && *err)
	{
		if (last)
			PQclear(last);
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("%s: did not finish within %d ms", what, timeout_ms)));
	}
	return last;
}

/* lab_exec on the admin connection, bounded by the admin's timeout */
static PGresult *
lab_admin_exec(Lab *lab, const char *sql, const char *what, LabError **err)
{
	return lab_exec(lab->admin, &lab->admin_busy, sql, what,
					lab->admin_timeout_ms, err);
}

/* lab_admin_exec, with a server error raised with its SQLSTATE */
static PGresult *
lab_admin(Lab *lab, const char *sql, const char *what)
{
	LabError   *err;
	PGresult   *last = lab_admin_exec(lab, sql, what, &err);

	if (err)
	{
		if (last)
			PQclear(last);
		ereport(ERROR,
				(errcode(lab_sqlstate_code(err->sqlstate)),
				 errmsg("%s: %s", what, err->message ? err->message : "unknown error"),
				 err->detail ? errdetail("%s", err->detail) : 0,
				 err->hint ? errhint("%s", err->hint) : 0));
	}
	return last;
}

static void
lab_admin_command(Lab *lab, const char *sql, const char *what)
{
	PGresult   *r = lab_admin(lab, sql, what);

	if (r)
		PQclear(r);
}

/* ----------------------------------------------------------------
 * Steps
 * ----------------------------------------------------------------
 */

static void lab_send_next(Lab *lab, LabSession *s, int current);

static void
lab_send(Lab *lab, int idx, int current)
{
	LabStep    *st = &lab->steps[idx];
	LabSession *s = &lab->sessions[st->session];
	int			after = (idx == current) ? 0 : current + 1;

	st->sent = true;
	if (st->cond_step >= 0)
	{
		LabStep    *c = &lab->steps[st->cond_step];

		if (!c->done || strcmp(c->outcome, "ok") != 0 || c->ntuples < st->cond_min)
		{
			st->done = true;
			st->outcome = "skipped";
			if (!c->done || strcmp(c->outcome, "ok") != 0)
				st->result = psprintf("step %d failed", st->cond_step + 1);
			else
				st->result = psprintf("step %d returned %d row%s, %d needed",
									  st->cond_step + 1, c->ntuples,
									  c->ntuples == 1 ? "" : "s", st->cond_min);
			lab_event(lab, idx + 1, s->name, st->sql, st->outcome, st->result,
					  NULL, NULL, after, idx == current ? 0 : 1000 + idx);
			lab_send_next(lab, s, current);
			return;
		}
	}
	if (!PQsendQuery(s->conn, st->sql))
	{
		st->done = true;
		st->outcome = "error";
		st->sqlstate = "08006";
		st->message = lab_pq_message(s->conn);
		lab_event(lab, idx + 1, s->name, st->sql, st->outcome, NULL,
				  st->sqlstate, st->message, after, idx == current ? 0 : 1000 + idx);
		lab_send_next(lab, s, current);
		return;
	}
	s->step = idx;
	s->sent_at = GetCurrentTimestamp();
	s->running_since = s->sent_at;
	s->blocked = false;
	s->cancelled = false;
	s->blockers = 0;
	s->outside = false;
	s->copy = NULL;
	st->after_step = after;
}

/* The session is free: send the next step of its queue, if any. */
static void
lab_send_next(Lab *lab, LabSession *s, int current)
{
	if (s->step < 0 && s->qhead < s->nqueue)
		lab_send(lab, s->queue[s->qhead++], current);
}

/* The in-flight step of s has all its results: record it. */
static void
lab_step_done(Lab *lab, LabSession *s, int current)
{
	int			idx = s->step;
	LabStep    *st = &lab->steps[idx];
	int			key;

	st->done = true;
	if (s->copy)
	{
		/* whatever the server said after the lab ended the COPY */
		st->outcome = "error";
		st->sqlstate = s->copy->sqlstate;
		st->message = s->copy->message;
		if (s->last)
			st->result = lab_format(s->last, &st->ntuples);
	}
	else if (s->error)
	{
		st->sqlstate = lab_field(s->error, PG_DIAG_SQLSTATE);
		st->message = lab_field(s->error, PG_DIAG_MESSAGE_PRIMARY);
		if (s->cancelled && st->sqlstate && strcmp(st->sqlstate, "57014") == 0)
		{
			st->outcome = (char *) s->cancel_reason;
			st->message = strcmp(s->cancel_reason, "timeout") == 0
				? psprintf("did not finish or block within %d ms; cancelled", lab->timeout_ms)
				: pstrdup("still blocked when the schedule ended; cancelled");
		}
		else
			st->outcome = "error";
		/* the results of the statements before the error */
		if (s->last)
			st->result = lab_format(s->last, &st->ntuples);
	}
	else if (s->last)
	{
		st->outcome = "ok";
		st->result = lab_format(s->last, &st->ntuples);
	}
	else
	{
		st->outcome = "ok";
		st->result = pstrdup("(empty)");
	}
	if (s->last)
		PQclear(s->last);
	if (s->error)
		PQclear(s->error);
	s->last = s->error = NULL;

	if (strcmp(st->outcome, "cancelled") == 0)
		st->after_step = 0;
	else if (st->blocked || idx != current)
		st->after_step = current + 1;
	/* order within a settle: see lab_settle */
	if (idx == current && !st->blocked)
		key = 0;
	else if (idx == current)
		key = 100000;
	else
		key = 1000 + idx;
	lab_event(lab, idx + 1, s->name, st->sql, st->outcome, st->result,
			  st->sqlstate, st->message, st->after_step, key);
	s->step = -1;
	s->blocked = false;
	s->cancelled = false;
	s->copy = NULL;
	lab_send_next(lab, s, current);
}

/*
 * The in-flight step of s cannot finish normally (the connection failed):
 * report it as 08006.  Later steps of the session fail to send.
 */
static void
lab_step_lost(Lab *lab, LabSession *s, int current)
{
	LabStep    *st = &lab->steps[s->step];

	st->done = true;
	st->outcome = "error";
	st->sqlstate = "08006";
	st->message = lab_pq_message(s->conn);
	lab_event(lab, s->step + 1, s->name, st->sql, st->outcome, NULL,
			  st->sqlstate, st->message, current + 1, 1000 + s->step);
	s->step = -1;
	s->copy = NULL;
}

/*
 * Read what has arrived on s; true if its in-flight step finished.  Never
 * waits: a COPY is ended (lab_end_copy) and its rows are read as they
 * arrive, in later calls.
 */
static bool
lab_collect(Lab *lab, LabSession *s, int current)
{
	if (!PQconsumeInput(s->conn))
	{
		lab_step_lost(lab, s, current);
		return true;
	}
	while (!PQisBusy(s->conn))
	{
		PGresult   *r = PQgetResult(s->conn);

		if (r == NULL)
		{
			lab_step_done(lab, s, current);
			return true;
		}
		if (lab_is_copy(r))
		{
			LabCopyAction a;

			if (s->copy == NULL)
				s->copy = lab_copy_error(PQresultStatus(r));
			a = lab_end_copy(s->conn, r);
			if (a == LAB_COPY_BROKEN)
			{
				lab_step_lost(lab, s, current);
				return true;
			}
			if (a == LAB_COPY_WAIT)
				return false;
			continue;
		}
		if (PQresultStatus(r) == PGRES_FATAL_ERROR && s->error == NULL)
			s->error = r;
		else if (PQresultStatus(r) == PGRES_FATAL_ERROR)
			PQclear(r);
		else
		{
			if (s->last)
				PQclear(s->last);
			s->last = r;
		}
	}
	return false;
}

static void
lab_add_blockers(Lab *lab, LabSession *s, ArrayType *pids)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i,
				j;

	deconstruct_array(pids, INT4OID, 4, true, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		int			pid = DatumGetInt32(elems[i]);
		bool		found = false;

		for (j = 0; j < lab->nsessions; j++)
			if (lab->sessions[j].pid == pid)
			{
				s->blockers |= (1u << j);
				found = true;
			}
		if (!found)
			s->outside = true;
	}
}

/* What s is waiting for, from the lock manager. */
static void
lab_blockers(Lab *lab, LabSession *s)
{
	MemoryContext old = MemoryContextSwitchTo(lab->pollcxt);

	s->blockers = 0;
	s->outside = false;
	lab_add_blockers(lab, s, DatumGetArrayTypeP(DirectFunctionCall1(pg_blocking_pids,
																	Int32GetDatum(s->pid))));
	lab_add_blockers(lab, s, DatumGetArrayTypeP(DirectFunctionCall1(pg_safe_snapshot_blocking_pids,
																	Int32GetDatum(s->pid))));
	MemoryContextSwitchTo(old);
	MemoryContextReset(lab->pollcxt);
}

/* Is there a cycle of waits among the lab's blocked sessions? */
static bool
lab_cycle(Lab *lab)
{
	int			i;

	for (i = 0; i < lab->nsessions; i++)
	{
		uint32		seen = 0;
		uint32		frontier = lab->sessions[i].step >= 0 ? lab->sessions[i].blockers : 0;

		while (frontier & ~seen)
		{
			int			j;
			uint32		next = 0;

			seen |= frontier;
			if (seen & (1u << i))
				return true;
			for (j = 0; j < lab->nsessions; j++)
				if ((frontier & (1u << j)) && lab->sessions[j].step >= 0)
					next |= lab->sessions[j].blockers;
			frontier = next;
		}
		if (seen & (1u << i))
			return true;
	}
	return false;
}

static char *
lab_blocker_names(Lab *lab, LabSession *s)
{
	StringInfoData buf;
	int			j;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "waiting for ");
	for (j = 0; j < lab->nsessions; j++)
		if (s->blockers & (1u << j))
		{
			if (buf.len > strlen("waiting for "))
				appendStringInfoString(&buf, ", ");
			appendStringInfoString(&buf, lab->sessions[j].name);
		}
	return buf.data;
}

/*
 * Wait until every session with a step in flight has finished or is
 * blocked by another lab session (and no cycle of such waits remains for
 * the deadlock detector to break).  Steps that take longer than the step
 * timeout without blocking are cancelled.
 *
 * The events of one settle are put in a fixed order, so that the report
 * does not depend on which of two released sessions the scheduler ran
 * first: the current step (finished, or blocked), then the other steps in
 * schedule order (steps released, steps that waited for their session),
 * then the current step's own completion if it had blocked.
 */
static void
lab_settle(Lab *lab, int current)
{
	int			i;

	lab->settle_from = lab->nevents;
	for (;;)
	{
		bool		progress = false;
		bool		settled = true;
		bool		any = false;
		struct pollfd pfds[LAB_MAX_SESSIONS];
		int			nfds = 0;
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();
		/* the current step's session first, then the others */
		for (i = -1; i < lab->nsessions; i++)
		{
			LabSession *s;

			if (i == -1)
				s = &lab->sessions[lab->steps[current].session];
			else if (i == lab->steps[current].session)
				continue;
			else
				s = &lab->sessions[i];
			if (s->step >= 0 && lab_collect(lab, s, current))
				progress = true;
		}
		if (progress)
			continue;

		now = GetCurrentTimestamp();
		for (i = 0; i < lab->nsessions; i++)
		{
			LabSession *s = &lab->sessions[i];
			LabStep    *st;

			if (s->step < 0)
				continue;
			any = true;
			st = &lab->steps[s->step];
			lab_blockers(lab, s);
			if (s->blockers != 0 && !s->cancelled)
			{
				s->running_since = now;
				if (!s->blocked)
				{
					s->blocked = true;
					st->blocked = true;
					lab_event(lab, s->step + 1, s->name, st->sql, "blocked",
							  lab_blocker_names(lab, s), NULL, NULL,
							  s->step == current ? 0 : current + 1,
							  s->step == current ? 0 : 1000 + s->step);
				}
			}
			else
			{
				/* running (or waiting for something outside the lab) */
				settled = false;
				if (!s->cancelled &&
					TimestampDifferenceExceeds(s->running_since, now, lab->timeout_ms))
				{
					lab_cancel(s->conn);
					s->cancelled = true;
					s->cancel_reason = "timeout";
				}
			}
			pfds[nfds].fd = PQsocket(s->conn);
			pfds[nfds].events = POLLIN;
			pfds[nfds].revents = 0;
			nfds++;
		}
		if (!any)
			break;
		if (settled && lab_cycle(lab))
		{
			LabSession *s = &lab->sessions[lab->steps[current].session];

			/* the deadlock detector breaks it; the step timeout bounds it */
			settled = false;
			if (lab->cycle_since == 0)
				lab->cycle_since = now;
			else if (s->step == current && !s->cancelled &&
					 TimestampDifferenceExceeds(lab->cycle_since, now, lab->timeout_ms))
			{
				lab_cancel(s->conn);
				s->cancelled = true;
				s->cancel_reason = "timeout";
			}
		}
		else
			lab->cycle_since = 0;
		if (settled)
			break;
		(void) poll(pfds, nfds, LAB_POLL_MS);
	}
	if (lab->nevents - lab->settle_from > 1)
		qsort(lab->events + lab->settle_from, lab->nevents - lab->settle_from,
			  sizeof(LabEvent), lab_event_cmp);
}

/* ----------------------------------------------------------------
 * The run
 * ----------------------------------------------------------------
 */

/* Drop scratch schemas of this role whose backend is gone. */
static void
lab_sweep(Lab *lab)
{
	PGresult   *r = lab_admin(lab,
							  psprintf("SELECT format('SET lock_timeout = ''200ms''; DROP SCHEMA %%I CASCADE', n.nspname)"
									   "  FROM pg_catalog.pg_namespace n"
									   " WHERE n.nspname ~ '^dtx_lab_[0-9]{1,9}_%u$'"
									   "   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a"
									   "                    WHERE a.pid = split_part(n.nspname, '_', 3)::int)",
									   GetUserId()),
							  "could not look for leftover lab schemas");
	int			i;

	/*
	 * A leftover that cannot be dropped now (a session of the dead caller
	 * still holds a lock, until it notices its client is gone) is left for
	 * a later call.
	 */
	for (i = 0; r && i < PQntuples(r); i++)
	{
		LabError   *err;
		PGresult   *d = lab_admin_exec(lab, PQgetvalue(r, i, 0), "leftover lab schema", &err);

		if (d)
			PQclear(d);
	}
	if (r)
		PQclear(r);
	lab_admin_command(lab, "SET lock_timeout = 0", "could not reset lock_timeout");
}

/* Close everything; never raises (also used while an error unwinds). */
static void
lab_close(Lab *lab)
{
	int			i;

	for (i = 0; i < lab->nsessions; i++)
	{
		LabSession *s = &lab->sessions[i];

		if (s->conn == NULL)
			continue;
		if (s->step >= 0 || s->busy)
		{
			lab_cancel(s->conn);
			(void) lab_drain(s->conn, 2000);
		}
		if (s->last)
			PQclear(s->last);
		if (s->error)
			PQclear(s->error);
		s->last = s->error = NULL;
		PQfinish(s->conn);
		s->conn = NULL;
	}
	if (lab->admin)
	{
		if (lab->admin_busy)
		{
			lab_cancel(lab->admin);
			(void) lab_drain(lab->admin, 2000);
		}
		if (lab->schema_made)
		{
			char	   *sql = psprintf("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS %s CASCADE",
									   quote_identifier(lab->schema));

			if (PQsendQuery(lab->admin, sql))
				(void) lab_drain(lab->admin, 15000);
		}
		PQfinish(lab->admin);
		lab->admin = NULL;
	}
}

static void
lab_check_can_run(void)
{
	HeapTuple	tup;
	bool		canlogin;
	char	   *user = GetUserNameFromId(GetUserId(), false);

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("the isolation lab cannot run on a server in recovery"),
				 errhint("Run it on the primary.")));
	if (pg_database_aclcheck(MyDatabaseId, GetUserId(), ACL_CREATE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to create the isolation lab's scratch schema"),
				 errdetail("The lab runs each schedule in a schema of its own, dropped afterwards."),
				 errhint("GRANT CREATE ON DATABASE %s TO %s;",
						 quote_identifier(get_database_name(MyDatabaseId)),
						 quote_identifier(user))));
	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(GetUserId()));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for role %u", GetUserId());
	canlogin = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
	ReleaseSysCache(tup);
	if (!canlogin)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" cannot log in, so the isolation lab cannot open sessions as it", user),
				 errdetail("Lab sessions are real connections made as the current role."),
				 errhint("Run the lab as a role with LOGIN.")));
}

static char **
lab_text_array(ArrayType *a, int *n, const char *what, bool allow_empty)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;
	int			i;

	deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	out = palloc(sizeof(char *) * (*n + 1));
	for (i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain null", what)));
		out[i] = TextDatumGetCString(elems[i]);
		if (!allow_empty && out[i][0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not contain an empty string", what)));
	}
	return out;
}

static int *
lab_int_array(ArrayType *a, int *n, const char *what)
{
	Datum	   *elems;
	bool	   *nulls;
	int		   *out;
	int			i;

	deconstruct_array(a, INT4OID, 4, true, TYPALIGN_INT, &elems, &nulls, n);
	out = palloc(sizeof(int) * (*n + 1));
	for (i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain null", what)));
		out[i] = DatumGetInt32(elems[i]);
	}
	return out;
}

/* Final contents of every table of the scratch schema. */
static void
lab_final_state(Lab *lab)
{
	PGresult   *tables = lab_admin(lab,
								   psprintf("SELECT c.relname, format('%%I.%%I', n.nspname, c.relname)"
											"  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
											" WHERE n.nspname = %s AND c.relkind IN ('r', 'p')"
											" ORDER BY 1",
											quote_literal_cstr(lab->schema)),
								   "could not read the final state");
	int			i;

	for (i = 0; tables && i < PQntuples(tables); i++)
	{
		char	   *rel = pstrdup(PQgetvalue(tables, i, 1));
		PGresult   *r;
		int			ntuples;
		LabError   *err;

		/* ordered by the first column, or not at all if it has no order */
		r = lab_admin_exec(lab, psprintf("SELECT * FROM %s ORDER BY 1", rel), "final state", &err);
		if (err)
		{
			if (r)
				PQclear(r);
			r = lab_admin(lab, psprintf("SELECT * FROM %s", rel), "could not read the final state");
		}
		lab_event(lab, 0, NULL, psprintf("table %s", PQgetvalue(tables, i, 0)),
				  "final", lab_format(r, &ntuples), NULL, NULL, 0, 0);
		PQclear(r);
	}
	if (tables)
		PQclear(tables);
}

static void
lab_invariant(Lab *lab, const char *invariant)
{
	StringInfoData sql;
	PGresult   *r;
	int			i;
	const char *verdict;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "WITH steps(step, session, statement, outcome, result, sqlstate, blocked) AS (VALUES ");
	for (i = 0; i < lab->nsteps; i++)
	{
		LabStep    *st = &lab->steps[i];

		appendStringInfo(&sql, "%s(%d, %s::text, %s::text, %s::text, %s::text, %s::text, %s)",
						 i > 0 ? ", " : "", i + 1,
						 quote_literal_cstr(lab->sessions[st->session].name),
						 quote_literal_cstr(st->sql),
						 st->outcome ? quote_literal_cstr(st->outcome) : "NULL",
						 st->result ? quote_literal_cstr(st->result) : "NULL",
						 st->sqlstate ? quote_literal_cstr(st->sqlstate) : "NULL",
						 st->blocked ? "true" : "false");
	}
	appendStringInfo(&sql, ") SELECT (%s)::boolean", invariant);
	r = lab_admin(lab, sql.data, "invariant failed");
	if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
		PQnfields(r) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invariant must be one boolean expression")));
	if (PQgetisnull(r, 0, 0))
		verdict = "unknown";
	else
		verdict = strcmp(PQgetvalue(r, 0, 0), "t") == 0 ? "kept" : "violated";
	PQclear(r);
	lab_event(lab, 0, NULL, pstrdup(invariant), verdict, NULL, NULL, NULL, 0, 0);
}

static void
lab_run_steps(Lab *lab)
{
	int			i;
	TimestampTz deadline;

	for (i = 0; i < lab->nsteps; i++)
	{
		LabStep    *st = &lab->steps[i];
		LabSession *s = &lab->sessions[st->session];

		if (s->step >= 0)
		{
			/* the session is busy: the step waits its turn, as a client would */
			s->queue[s->nqueue++] = i;
			continue;
		}
		lab_send(lab, i, i);
		lab_settle(lab, i);
	}

	/* steps still blocked: cancel them; steps queued behind them never ran */
	for (i = 0; i < lab->nsessions; i++)
	{
		LabSession *s = &lab->sessions[i];

		if (s->step >= 0)
		{
			s->cancel_reason = "cancelled";
			s->cancelled = true;
			lab_cancel(s->conn);
		}
	}
	for (deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);;)
	{
		bool		busy = false;

		for (i = 0; i < lab->nsessions; i++)
		{
			LabSession *s = &lab->sessions[i];

			/* no queued step may start now */
			s->qhead = s->nqueue;
			if (s->step >= 0)
			{
				busy = true;
				(void) lab_collect(lab, s, lab->nsteps - 1);
			}
		}
		if (!busy || GetCurrentTimestamp() >= deadline)
			break;
		CHECK_FOR_INTERRUPTS();
		pg_usleep(1000);
	}
	for (i = 0; i < lab->nsteps; i++)
	{
		LabStep    *st = &lab->steps[i];

		if (!st->sent)
		{
			st->outcome = "not run";
			st->message = psprintf("session %s was still waiting for an earlier step",
								   lab->sessions[st->session].name);
			lab_event(lab, i + 1, lab->sessions[st->session].name, st->sql,
					  st->outcome, NULL, NULL, st->message, 0, 0);
		}
	}
	/* open transactions are rolled back */
	for (i = 0; i < lab->nsessions; i++)
	{
		LabSession *s = &lab->sessions[i];

		PGTransactionStatusType ts = PQtransactionStatus(s->conn);

		/* a connection in any other state is closed by lab_close */
		if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
		{
			LabError   *err;
			PGresult   *r = lab_exec(s->conn, &s->busy, "ROLLBACK",
									 psprintf("could not roll back lab session \"%s\"", s->name),
									 LAB_INTERNAL_TIMEOUT_MS, &err);

			if (r)
				PQclear(r);
		}
	}
}

/*
 * dtx._lab_exec(isolation, setup text[], sessions text[], step_session
 *				 int[] (1-based), step_sql text[], teardown text[],
 *				 invariant text, timeout_ms int, cond_step int[],
 *				 cond_min int[])
 *	 RETURNS TABLE (step, session, statement, outcome, result, sqlstate,
 *					message, after_step)
 */
PG_FUNCTION_INFO_V1(dtx_lab_exec);
Datum
dtx_lab_exec(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Lab		   *volatile lab;
	char	  **setup;
	char	  **names;
	char	  **sqls;
	char	  **teardown;
	int		   *step_session;
	int		   *cond_step = NULL;
	int		   *cond_min = NULL;
	int			nsetup,
				nnames,
				nsqls,
				nteardown,
				nss,
				ncs = 0,
				ncm = 0;
	char	   *invariant;
	int			i;

	for (i = 0; i < 5; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("dtx._lab_exec: argument %d must not be null", i + 1)));
	InitMaterializedSRF(fcinfo, 0);

	lab = palloc0(sizeof(Lab));
	lab->isolation = (char *) dtx_lab_isolation(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	setup = lab_text_array(PG_GETARG_ARRAYTYPE_P(1), &nsetup, "setup", true);
	names = lab_text_array(PG_GETARG_ARRAYTYPE_P(2), &nnames, "sessions", false);
	step_session = lab_int_array(PG_GETARG_ARRAYTYPE_P(3), &nss, "step sessions");
	sqls = lab_text_array(PG_GETARG_ARRAYTYPE_P(4), &nsqls, "steps", true);
	if (PG_ARGISNULL(5))
		nteardown = 0, teardown = NULL;
	else
		teardown = lab_text_array(PG_GETARG_ARRAYTYPE_P(5), &nteardown, "teardown", true);
	invariant = PG_ARGISNULL(6) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(6));
	lab->timeout_ms = PG_ARGISNULL(7) ? lab_step_timeout : PG_GETARG_INT32(7);
	if (!PG_ARGISNULL(8))
		cond_step = lab_int_array(PG_GETARG_ARRAYTYPE_P(8), &ncs, "cond_step");
	if (!PG_ARGISNULL(9))
		cond_min = lab_int_array(PG_GETARG_ARRAYTYPE_P(9), &ncm, "cond_min");

	if (nnames < 1 || nnames > LAB_MAX_SESSIONS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a schedule needs 1 to %d sessions, not %d", LAB_MAX_SESSIONS, nnames)));
	if (nsqls < 1 || nsqls > LAB_MAX_STEPS || nss != nsqls)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a schedule needs 1 to %d steps, not %d", LAB_MAX_STEPS, nsqls)));
	if (lab->timeout_ms < 10)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout_ms must be at least 10")));
	if ((cond_step || cond_min) && (ncs != nsqls || ncm != nsqls))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cond_step and cond_min must have one element per step")));

	lab->nsessions = nnames;
	lab->sessions = palloc0(sizeof(LabSession) * nnames);
	for (i = 0; i < nnames; i++)
	{
		int			j;

		for (j = 0; j < i; j++)
			if (strcmp(names[i], names[j]) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("session \"%s\" is named twice", names[i])));
		lab->sessions[i].name = names[i];
		lab->sessions[i].step = -1;
		lab->sessions[i].queue = palloc(sizeof(int) * nsqls);
	}
	lab->nsteps = nsqls;
	lab->steps = palloc0(sizeof(LabStep) * nsqls);
	for (i = 0; i < nsqls; i++)
	{
		LabStep    *st = &lab->steps[i];

		if (step_session[i] < 1 || step_session[i] > nnames)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("step %d names no session", i + 1)));
		st->session = step_session[i] - 1;
		st->sql = sqls[i];
		st->cond_step = -1;
		if (cond_step && cond_step[i] > 0)
		{
			if (cond_step[i] > i)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("step %d can only depend on an earlier step", i + 1)));
			st->cond_step = cond_step[i] - 1;
			st->cond_min = cond_min[i];
		}
	}
	lab->maxevents = 16;
	lab->events = palloc(sizeof(LabEvent) * lab->maxevents);
	/* the role's oid too: another role's leftover may have the same pid */
	lab->schema = psprintf("dtx_lab_%d_%u", MyProcPid, GetUserId());
	lab->admin_timeout_ms = Max(lab->timeout_ms, LAB_INTERNAL_TIMEOUT_MS);
	lab->pollcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_dtx lab poll",
										 ALLOCSET_SMALL_SIZES);

	lab_check_can_run();

	PG_TRY();
	{
		StringInfoData buf;

		lab->admin = lab_connect("admin");
		lab_sweep(lab);
		lab->schema_made = true;
		lab_admin_command(lab,
						  psprintf("DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s;"
								   " SET search_path = %s; SET statement_timeout = 0;"
								   " SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0;"
								   " SET client_connection_check_interval = '1s'",
								   quote_identifier(lab->schema), quote_identifier(lab->schema),
								   quote_identifier(lab->schema)),
						  "could not create the lab's scratch schema");
		/* the schedule's own SQL has the step timeout */
		lab->admin_timeout_ms = lab->timeout_ms;
		for (i = 0; i < nsetup; i++)
			lab_admin_command(lab, setup[i], "setup failed");
		lab->admin_timeout_ms = Max(lab->timeout_ms, LAB_INTERNAL_TIMEOUT_MS);

		initStringInfo(&buf);
		appendStringInfo(&buf,
						 "SET search_path = %s; SET default_transaction_isolation = %s;"
						 " SET statement_timeout = 0; SET lock_timeout = 0;"
						 " SET idle_in_transaction_session_timeout = 0;"
						 /* a session whose caller died stops its statement soon */
						 " SET client_connection_check_interval = '1s'",
						 quote_identifier(lab->schema), quote_literal_cstr(lab->isolation));
		for (i = 0; i < nnames; i++)
		{
			LabSession *s = &lab->sessions[i];
			LabError   *err;
			PGresult   *r;

			s->conn = lab_connect(names[i]);
			s->pid = PQbackendPID(s->conn);
			r = lab_exec(s->conn, &s->busy, buf.data,
						 psprintf("could not prepare lab session \"%s\"", names[i]),
						 LAB_INTERNAL_TIMEOUT_MS, &err);
			if (r)
				PQclear(r);
			if (err)
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("could not prepare lab session \"%s\": %s", names[i],
								err->message ? err->message : "unknown error")));
		}

		lab_run_steps(lab);
		lab_final_state(lab);
		lab->admin_timeout_ms = lab->timeout_ms;
		if (invariant)
			lab_invariant(lab, invariant);
		for (i = 0; i < nteardown; i++)
		{
			LabError   *err;
			PGresult   *r = lab_admin_exec(lab, teardown[i], "teardown", &err);

			if (r)
				PQclear(r);
			if (err)
				lab_event(lab, 0, "(teardown)", teardown[i], "error", NULL,
						  err->sqlstate, err->message, 0, 0);
		}
	}
	PG_CATCH();
	{
		lab_close(lab);
		PG_RE_THROW();
	}
	PG_END_TRY();
	lab_close(lab);

	for (i = 0; i < lab->nevents; i++)
	{
		LabEvent   *e = &lab->events[i];
		Datum		values[8];
		bool		nulls[8] = {0};

		nulls[0] = e->step == 0;
		values[0] = Int32GetDatum(e->step);
#define TEXTCOL(n, v) do { nulls[n] = (v) == NULL; if (v) values[n] = CStringGetTextDatum(v); } while (0)
		TEXTCOL(1, e->session);
		TEXTCOL(2, e->statement);
		TEXTCOL(3, e->outcome);
		TEXTCOL(4, e->result);
		TEXTCOL(5, e->sqlstate);
		TEXTCOL(6, e->message);
#undef TEXTCOL
		nulls[7] = e->after_step == 0;
		values[7] = Int32GetDatum(e->after_step);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* dtx._lab_isolation(level): the canonical name, or ERROR 22023 */
PG_FUNCTION_INFO_V1(dtx_lab_isolation_sql);
Datum
dtx_lab_isolation_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(dtx_lab_isolation(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}

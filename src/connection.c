/*-------------------------------------------------------------------------
 *
 * connection.c
 *	  Connections from this backend to participants.
 *
 * This file owns every PGconn a backend opens to a participant:
 *
 *	- a cache keyed by (server, user), so a backend keeps one connection per
 *	  participant across transactions;
 *	- connecting with a deadline (dtx.connect_timeout, or the server's own
 *	  connect_timeout option) and an application_name that names pg_dtx and
 *	  the coordinating backend;
 *	- the non-superuser password rule of postgres_fdw and dblink;
 *	- interruptible sends and waits: every wait goes through dtx_conn_wait,
 *	  which sleeps on the process latch and the sockets, so statement_timeout,
 *	  pg_cancel_backend and shutdown interrupt it (the ERROR leaves the
 *	  connection marked in_flight, and the abort path sends the remote a
 *	  cancel before it does anything else);
 *	- abort-path helpers that never ERROR and give up at a deadline
 *	  (dtx.cancel_timeout), closing the connection rather than reusing one
 *	  whose state is unknown;
 *	- translating remote errors field by field, with the remote SQL as
 *	  context.  No message ever carries a connection string or password.
 *
 * What a connection is doing inside a global transaction (remote BEGIN,
 * savepoints, commit) is coordinator.c's business.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <poll.h>

#include "access/xact.h"
#include "catalog/pg_user_mapping.h"
#include "commands/defrem.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "connection.h"
#include "option.h"
#include "pg_dtx.h"
#include "shmem.h"

/*
 * Session settings on every participant connection, so the text that
 * dtx.query converts to local types reads the same whatever the remote's
 * defaults are.
 */
#define DTX_SESSION_SETUP_SQL \
	"SET datestyle = ISO; SET intervalstyle = postgres; SET extra_float_digits = 3"

static HTAB *dtx_conns = NULL;

static void dtx_conn_inval_callback(Datum arg, int cacheid, uint32 hashvalue);
static PGconn *dtx_connect(ForeignServer *server, UserMapping *user,
						   int *timeout_s);

/*
 * dtx_conn_hash returns the cache, creating it (and registering the
 * invalidation callbacks) on first use.
 */
HTAB *
dtx_conn_hash(void)
{
	if (dtx_conns == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(DtxConnKey);
		ctl.entrysize = sizeof(DtxConn);
		ctl.hcxt = CacheMemoryContext;
		dtx_conns = hash_create("pg_dtx connections", 8, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

		CacheRegisterSyscacheCallback(FOREIGNSERVEROID,
									  dtx_conn_inval_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(USERMAPPINGOID,
									  dtx_conn_inval_callback, (Datum) 0);
	}
	return dtx_conns;
}

/*
 * A server or user mapping changed: mark the connections that used it, so
 * they are reopened with the new options once no transaction uses them.
 */
static void
dtx_conn_inval_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	HASH_SEQ_STATUS scan;
	DtxConn    *c;

	hash_seq_init(&scan, dtx_conns);
	while ((c = (DtxConn *) hash_seq_search(&scan)))
	{
		if (c->conn == NULL)
			continue;
		if (hashvalue == 0 ||
			(cacheid == FOREIGNSERVEROID && c->server_hashvalue == hashvalue) ||
			(cacheid == USERMAPPINGOID && c->mapping_hashvalue == hashvalue))
			c->invalidated = true;
	}
}

/*
 * dtx_conn_get returns the connection for (server, user), opening one if
 * needed.  An idle cached connection that is broken, not idle on the remote,
 * or whose server or user mapping changed is closed and reopened.  A
 * connection lost in the middle of a transaction is not silently replaced:
 * that is an ERROR (DX001), since the remote work done so far is gone.
 */
/*
 * dtx_conn_check_idle reads, without blocking, whatever an idle connection
 * received: a FATAL message and end of file after the participant
 * restarted or terminated our backend.  libpq then reports CONNECTION_BAD.
 */
static void
dtx_conn_check_idle(DtxConn *c)
{
	int			i;

	for (i = 0; i < 8 && PQstatus(c->conn) == CONNECTION_OK; i++)
	{
		struct pollfd pfd;

		pfd.fd = PQsocket(c->conn);
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (pfd.fd < 0 || poll(&pfd, 1, 0) <= 0)
			break;
		if (!PQconsumeInput(c->conn))
			break;
	}
}

/*
 * dtx_conn_usable: the connection is open, idle between commands, valid
 * (no catalog change since), and has not been closed by the other side as
 * far as can be seen without waiting.  Needs no transaction.
 */
bool
dtx_conn_usable(DtxConn *c)
{
	if (c->conn == NULL || c->invalidated || c->in_flight || c->xact_depth > 0)
		return false;
	dtx_conn_check_idle(c);
	return PQstatus(c->conn) == CONNECTION_OK &&
		PQtransactionStatus(c->conn) == PQTRANS_IDLE;
}

DtxConn *
dtx_conn_get(ForeignServer *server, UserMapping *user)
{
	DtxConnKey	key;
	DtxConn    *c;
	bool		found;
	int			timeout_s;

	key.serverid = server->serverid;
	key.userid = user->userid;
	c = hash_search(dtx_conn_hash(), &key, HASH_ENTER, &found);
	if (!found)
	{
		memset((char *) c + sizeof(DtxConnKey), 0, sizeof(DtxConn) - sizeof(DtxConnKey));
		c->max_prepared_xacts = -1;
	}

	/*
	 * Between transactions, a participant that restarted or terminated our
	 * backend has closed the socket (maybe after a FATAL message): read what
	 * is there, without waiting, so that libpq notices and we reconnect
	 * instead of failing the first command of the next transaction.
	 */
	if (c->conn != NULL && c->detached)
		dtx_conn_reap_detached(c);
	if (c->conn != NULL && c->xact_depth == 0)
		dtx_conn_check_idle(c);

	if (c->conn != NULL && c->xact_depth == 0 &&
		(c->invalidated ||
		 PQstatus(c->conn) != CONNECTION_OK ||
		 PQtransactionStatus(c->conn) != PQTRANS_IDLE))
		dtx_conn_disconnect(c);

	if (c->conn != NULL && PQstatus(c->conn) != CONNECTION_OK)
	{
		c->state_unknown = true;
		ereport(ERROR,
				(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
				 errmsg("lost connection to participant \"%s\"", c->servername),
				 errdetail("The remote transaction was rolled back.")));
	}

	if (c->conn == NULL)
	{
		if (c->xact_depth > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
					 errmsg("lost connection to participant \"%s\"",
							server->servername),
					 errdetail("The remote transaction was rolled back.")));

		strlcpy(c->servername, server->servername, NAMEDATALEN);
		c->xact_depth = 0;
		c->in_flight = false;
		c->state_unknown = false;
		c->invalidated = false;
		c->remote_wrote = false;
		c->prepared = false;
		c->gid[0] = '\0';
		c->max_prepared_xacts = -1;
		c->copy_refused = false;
		c->timed_out = false;
		c->server_hashvalue =
			GetSysCacheHashValue1(FOREIGNSERVEROID,
								  ObjectIdGetDatum(server->serverid));
		c->mapping_hashvalue =
			GetSysCacheHashValue1(USERMAPPINGOID,
								  ObjectIdGetDatum(user->umid));
		c->conn = dtx_connect(server, user, &timeout_s);
		c->remote_pid = PQbackendPID(c->conn);
		{
			PGresult   *res;

			/* setting up the session is part of connecting: same deadline */
			c->timeout_ms = timeout_s * 1000;
			c->timeout_setting = "dtx.connect_timeout";
			res = dtx_conn_exec(c, DTX_SESSION_SETUP_SQL "; "
								"SELECT pg_catalog.current_setting('max_prepared_transactions')");
			if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
				PQnfields(res) != 1)
				dtx_report_remote_error(ERROR, c, res, DTX_SESSION_SETUP_SQL);
			c->max_prepared_xacts = atoi(PQgetvalue(res, 0, 0));
			PQclear(res);
		}
	}

	/*
	 * The background worker's commands must end by dtx.remote_timeout, so a
	 * participant that stops answering cannot stall recovery and the outbox;
	 * a backend's end with statement_timeout and cancels.
	 */
	c->timeout_ms = IsBackgroundWorker ? dtx_remote_timeout : 0;
	c->timeout_setting = "dtx.remote_timeout";
	return c;
}

/*
 * dtx_conn_open_temp opens a connection that is not cached (for probes,
 * recovery and the xa_* functions); the caller closes it with
 * dtx_conn_disconnect, also on ERROR.  Each command on it must be answered
 * within dtx.remote_timeout (these are admin calls, often made by the
 * background worker, that one silent participant must not stall).
 */
void
dtx_conn_open_temp(DtxConn *c, ForeignServer *server, UserMapping *user)
{
	int			timeout_s;

	c->key.serverid = server->serverid;
	c->key.userid = user->userid;
	strlcpy(c->servername, server->servername, NAMEDATALEN);
	c->copy_refused = false;
	c->timed_out = false;
	c->timeout_ms = dtx_remote_timeout;
	c->timeout_setting = "dtx.remote_timeout";
	c->conn = dtx_connect(server, user, &timeout_s);
	c->remote_pid = PQbackendPID(c->conn);
}

/*
 * dtx_conn_disconnect closes the connection (if any) and forgets its remote
 * transaction state.  Never ERRORs.
 */
void
dtx_conn_disconnect(DtxConn *c)
{
	if (c->conn != NULL)
	{
		PQfinish(c->conn);
		c->conn = NULL;
	}
	c->in_flight = false;
	c->detached = false;
	c->invalidated = false;
	c->copy_refused = false;	/* dtx_conn_next_result sets them after */
	c->timed_out = false;
	c->remote_pid = 0;
}

/*
 * Milliseconds until deadline (0 = no deadline: -1, wait forever); 0 when
 * it has passed.
 */
static long
dtx_ms_until(TimestampTz deadline)
{
	if (deadline == 0)
		return -1;
	return TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
}

/*
 * dtx_wait_socket waits for one socket event (or the latch, or the deadline)
 * and returns the WL_* bits that fired.  It calls CHECK_FOR_INTERRUPTS
 * after the wait, so a cancel or timeout ERRORs out of here.
 */
static int
dtx_wait_socket(pgsocket sock, int events, TimestampTz deadline)
{
	long		timeout = dtx_ms_until(deadline);
	int			rc;

	if (timeout == 0)
		return WL_TIMEOUT;
	rc = WaitLatchOrSocket(MyLatch,
						   WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | events |
						   (timeout > 0 ? WL_TIMEOUT : 0),
						   sock, timeout, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return rc;
}

/*
 * Report a failure to connect: DX001, with libpq's message (which never
 * includes the password) as detail.  Frees conn.
 */
static void
dtx_connect_failed(PGconn *conn, ForeignServer *server, const char *why)
{
	char	   *msg = dtx_remote_text(pchomp(why ? why : (conn ? PQerrorMessage(conn) : "out of memory")));

	if (conn)
		PQfinish(conn);
	ereport(ERROR,
			(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
			 errmsg("could not connect to participant \"%s\"",
					server->servername),
			 errdetail_internal("%s", msg)));
}

/*
 * dtx_connect opens a connection to a participant and sets it up (session
 * settings that make text I/O of dtx.query stable, non-blocking mode).
 *
 * The deadline is the server's connect_timeout option if it has one, else
 * dtx.connect_timeout.  An interrupt while connecting ERRORs; the half-open
 * PGconn is freed first.  A non-superuser must give a password in the user
 * mapping and the server must actually ask for it (unless a superuser set
 * password_required false), so nobody borrows the local server's trust or
 * peer authentication.
 */
static PGconn *
dtx_connect(ForeignServer *server, UserMapping *user, int *timeout_out)
{
	int			max = dtx_max_conn_params(server, user) + 4;
	const char **keywords = palloc(sizeof(char *) * (max + 1));
	const char **values = palloc(sizeof(char *) * (max + 1));
	char		appname[NAMEDATALEN];
	int			n;
	int			i;
	int			timeout_s = dtx_connect_timeout;
	bool		check_password;
	TimestampTz deadline;
	PGconn	   *volatile conn = NULL;

	check_password = !superuser_arg(user->userid) && dtx_password_required(user);
	if (check_password && !dtx_user_mapping_has_password(user))
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("password is required"),
				 errdetail("Non-superusers must provide a password in the user mapping.")));

	n = dtx_build_conn_params(server, user, keywords, values, max - 4);
	for (i = 0; i < n; i++)
	{
		if (strcmp(keywords[i], "connect_timeout") == 0)
			timeout_s = atoi(values[i]) > 0 ? atoi(values[i]) : dtx_connect_timeout;
	}
	snprintf(appname, sizeof(appname), "pg_dtx %s pid=%d",
			 IsBackgroundWorker ? "recovery" : "coordinator", MyProcPid);
	keywords[n] = "application_name";
	values[n++] = appname;
	keywords[n] = "client_encoding";
	values[n++] = GetDatabaseEncodingName();
	keywords[n] = NULL;
	values[n] = NULL;

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   timeout_s * 1000);
	*timeout_out = timeout_s;

	PG_TRY();
	{
		PostgresPollingStatusType st = PGRES_POLLING_WRITING;

		PGconn	   *failed;

		conn = PQconnectStartParams(keywords, values, false);
		if (conn == NULL || PQstatus(conn) == CONNECTION_BAD)
		{
			failed = conn;
			conn = NULL;
			dtx_connect_failed(failed, server, NULL);
		}

		while (st != PGRES_POLLING_OK)
		{
			int			rc;

			if (st == PGRES_POLLING_FAILED)
			{
				failed = conn;
				conn = NULL;
				dtx_connect_failed(failed, server, NULL);
			}
			rc = dtx_wait_socket(PQsocket(conn),
								 st == PGRES_POLLING_READING
								 ? WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE,
								 deadline);
			if (rc & WL_TIMEOUT)
			{
				char		why[128];

				failed = conn;
				snprintf(why, sizeof(why),
						 "timeout expired after %d s (dtx.connect_timeout or the server's connect_timeout option)",
						 timeout_s);
				conn = NULL;
				dtx_connect_failed(failed, server, why);
			}
			if (rc & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
				st = PQconnectPoll(conn);
		}

		if (check_password && !PQconnectionUsedPassword(conn))
		{
			PQfinish(conn);
			conn = NULL;
			ereport(ERROR,
					(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
					 errmsg("password is required"),
					 errdetail("Non-superuser cannot connect if the server does not request a password."),
					 errhint("Target server's authentication method must be changed or set password_required=false in the user mapping attributes.")));
		}

		if (PQsetnonblocking(conn, 1) != 0)
		{
			failed = conn;
			conn = NULL;
			dtx_connect_failed(failed, server, NULL);
		}
	}
	PG_CATCH();
	{
		if (conn)
			PQfinish(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();

	pfree(keywords);
	pfree(values);
	return conn;
}

/*
 * dtx_conn_start_deadline sets the deadline of the command about to be
 * sent on c: now + c->timeout_ms, or none.
 */
static void
dtx_conn_start_deadline(DtxConn *c)
{
	c->deadline = c->timeout_ms > 0
		? TimestampTzPlusMilliseconds(GetCurrentTimestamp(), c->timeout_ms)
		: 0;
}

/*
 * dtx_conn_send sends a query (simple protocol: several statements are
 * allowed) without waiting for its results.  The connection is in_flight
 * until dtx_conn_get_result returns NULL.  ERRORs with DX001 if the
 * connection is gone.
 */
void
dtx_conn_send(DtxConn *c, const char *sql)
{
	if (c->conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
				 errmsg("lost connection to participant \"%s\"", c->servername)));
	c->in_flight = true;
	dtx_conn_start_deadline(c);
	if (!PQsendQuery(c->conn, sql))
		dtx_report_remote_error(ERROR, c, NULL, sql);
}

/*
 * dtx_conn_send_params is dtx_conn_send for one statement with text
 * parameters (no NULLs among them unless values[i] is NULL).
 */
void
dtx_conn_send_params(DtxConn *c, const char *sql, int nparams,
					 const char *const *values)
{
	if (c->conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
				 errmsg("lost connection to participant \"%s\"", c->servername)));
	c->in_flight = true;
	dtx_conn_start_deadline(c);
	if (!PQsendQueryParams(c->conn, sql, nparams, NULL, values, NULL, NULL, 0))
		dtx_report_remote_error(ERROR, c, NULL, sql);
}

/*
 * dtx_conn_wait waits until every one of the n connections has flushed its
 * output and has a complete result ready (PQisBusy false), or the deadline
 * passes (0: no deadline).  Returns false on timeout.  One wait loop serves
 * all connections, so remote work proceeds in parallel.
 *
 * Interruptible: statement_timeout, pg_cancel_backend and termination
 * ERROR out of the CHECK_FOR_INTERRUPTS here, leaving the connections
 * in_flight for the abort path to cancel.  When interrupts are held (abort
 * paths), only the deadline ends the wait.  A connection that fails counts
 * as ready: its error comes out of dtx_conn_get_result.
 */
bool
dtx_conn_wait(DtxConn **conns, int n, TimestampTz deadline)
{
	WaitEvent  *occurred = palloc(sizeof(WaitEvent) * (n + 2));

	for (;;)
	{
		WaitEventSet *set = NULL;
		int			nwait = 0;
		int			i;
		int			nev;
		long		timeout;

		CHECK_FOR_INTERRUPTS();

		for (i = 0; i < n; i++)
		{
			PGconn	   *conn = conns[i]->conn;
			int			flush;
			int			events;

			if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
				continue;
			flush = PQflush(conn);
			if (flush < 0)
				continue;
			if (flush == 0 && !PQisBusy(conn))
				continue;
			events = WL_SOCKET_READABLE | (flush == 1 ? WL_SOCKET_WRITEABLE : 0);
			if (set == NULL)
			{
				set = CreateWaitEventSet(CurrentMemoryContext, n + 2);
				AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET,
								  MyLatch, NULL);
				AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET,
								  NULL, NULL);
			}
			AddWaitEventToSet(set, events, PQsocket(conn), NULL, conns[i]);
			nwait++;
		}
		if (nwait == 0)
		{
			pfree(occurred);
			return true;
		}

		timeout = dtx_ms_until(deadline);
		if (timeout == 0)
		{
			FreeWaitEventSet(set);
			pfree(occurred);
			return false;
		}

		/* Nothing between Create and Free may ERROR: the set is not tracked */
		nev = WaitEventSetWait(set, timeout, occurred, n + 2,
							   PG_WAIT_EXTENSION);
		FreeWaitEventSet(set);

		for (i = 0; i < nev; i++)
		{
			WaitEvent  *ev = &occurred[i];

			if (ev->events & WL_LATCH_SET)
				ResetLatch(MyLatch);
			else if ((ev->events & WL_SOCKET_READABLE) && ev->user_data)
			{
				DtxConn    *c = (DtxConn *) ev->user_data;

				(void) PQconsumeInput(c->conn);
			}
		}
	}
}

/*
 * dtx_conn_next_result is the one way pg_dtx reads a result: every result
 * loop calls it instead of PQgetResult.  It waits (dtx_conn_wait:
 * interruptible unless interrupts are held) until the next result of the
 * command in flight is ready, or the deadline (0: none), and returns it;
 * the caller PQclears it.  NULL means one of:
 *	- the results are all read (c->conn is still set, in_flight ends);
 *	- the participant did not answer by the deadline: the connection is
 *	  closed and c->timed_out set;
 *	- the participant answered with COPY: the connection is closed and
 *	  c->copy_refused set.  pg_dtx sends no COPY data and reads none, and
 *	  in a COPY state PQgetResult would return a COPY result forever and
 *	  never NULL; closing is the only way out, and the participant rolls
 *	  the COPY and its transaction back.
 * So callers tell the end from a loss by c->conn == NULL.  ERRORs only on
 * interrupts, and never while it holds a result.
 */
PGresult *
dtx_conn_next_result(DtxConn *c, TimestampTz deadline)
{
	PGresult   *res;

	CHECK_FOR_INTERRUPTS();
	if (c->conn == NULL)
		return NULL;
	if (!dtx_conn_wait(&c, 1, deadline))
	{
		dtx_conn_disconnect(c);
		c->timed_out = true;
		return NULL;
	}
	res = PQgetResult(c->conn);
	if (res == NULL)
	{
		c->in_flight = false;
		return NULL;
	}
	switch (PQresultStatus(res))
	{
		case PGRES_COPY_IN:
		case PGRES_COPY_OUT:
		case PGRES_COPY_BOTH:
			PQclear(res);
			dtx_conn_disconnect(c);
			c->copy_refused = true;
			return NULL;
		default:
			return res;
	}
}

/*
 * dtx_conn_get_result returns the next result of the command in flight
 * (dtx_conn_next_result with the command's deadline, see
 * dtx_conn_start_deadline); NULL once all are read, or when the connection
 * was closed because the participant answered with COPY (c->conn == NULL,
 * c->copy_refused: the caller reports it).  A participant that does not
 * answer by the deadline is an ERROR (DX001), the connection closed.
 * Interruptible.  The caller owns (PQclears) the result.
 */
PGresult *
dtx_conn_get_result(DtxConn *c)
{
	PGresult   *res = dtx_conn_next_result(c, c->deadline);

	if (res == NULL && c->conn == NULL && c->timed_out)
	{
		c->state_unknown = true;
		ereport(ERROR,
				(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
				 errmsg("participant \"%s\" did not answer within %d ms",
						c->servername, c->timeout_ms),
				 errdetail("The connection was closed."),
				 errhint("The limit is %s.", c->timeout_setting)));
	}
	return res;
}

/*
 * dtx_conn_collect reads every result of the command in flight and returns
 * the first error, else the last result (the caller PQclears it).  An error
 * result is returned, not raised, unless the connection broke: that raises
 * DX001 and marks the connection state_unknown.  sql is for the error
 * context only.
 */
PGresult *
dtx_conn_collect(DtxConn *c, const char *sql)
{
	PGresult   *volatile last = NULL;

	PG_TRY();
	{
		PGresult   *res;

		while ((res = dtx_conn_get_result(c)) != NULL)
		{
			if (last != NULL && PQresultStatus(last) == PGRES_FATAL_ERROR)
				PQclear(res);
			else
			{
				PQclear(last);
				last = res;
			}
		}
	}
	PG_CATCH();
	{
		PQclear(last);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (last == NULL || c->conn == NULL || PQstatus(c->conn) != CONNECTION_OK)
	{
		c->state_unknown = true;
		dtx_report_remote_error(ERROR, c, last, sql);
	}
	return last;
}

/*
 * dtx_conn_exec sends sql and returns what dtx_conn_collect returns.
 */
PGresult *
dtx_conn_exec(DtxConn *c, const char *sql)
{
	dtx_conn_send(c, sql);
	return dtx_conn_collect(c, sql);
}

/*
 * dtx_conn_exec_command runs a command that must succeed; a remote error is
 * raised as a local ERROR with the remote's SQLSTATE.
 */
void
dtx_conn_exec_command(DtxConn *c, const char *sql)
{
	PGresult   *res = dtx_conn_exec(c, sql);

	if (PQresultStatus(res) != PGRES_COMMAND_OK &&
		PQresultStatus(res) != PGRES_TUPLES_OK)
		dtx_report_remote_error(ERROR, c, res, sql);
	PQclear(res);
}

/*
 * dtx_cleanup_deadline is when abort-path work on a participant gives up:
 * now + dtx.cancel_timeout.
 */
TimestampTz
dtx_cleanup_deadline(void)
{
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
									   dtx_cancel_timeout);
}

/*
 * Read and discard results until none is left, or the deadline.  Returns
 * false on timeout or a broken connection.  Never ERRORs (callers hold
 * interrupts or run in abort paths).
 */
static bool
dtx_conn_drain(DtxConn *c, TimestampTz deadline)
{
	for (;;)
	{
		PGresult   *res;

		if (c->conn == NULL || PQstatus(c->conn) != CONNECTION_OK)
			return false;
		res = dtx_conn_next_result(c, deadline);
		if (res == NULL)
			return c->conn != NULL && PQstatus(c->conn) == CONNECTION_OK;
		PQclear(res);
	}
}

/*
 * dtx_conn_cancel_and_drain stops whatever the remote is running for us:
 * if a command is in flight, send a cancel request and read its results
 * away.  On failure or at the deadline the connection is closed (the
 * remote backend then rolls back on its own).  Never ERRORs.
 */
bool
dtx_conn_cancel_and_drain(DtxConn *c, TimestampTz deadline)
{
	if (c->conn == NULL)
		return false;
	if (!c->in_flight && PQtransactionStatus(c->conn) != PQTRANS_ACTIVE)
		return true;

	if (PQtransactionStatus(c->conn) == PQTRANS_ACTIVE || PQisBusy(c->conn))
	{
		PGcancel   *cancel = PQgetCancel(c->conn);
		char		errbuf[256];

		if (cancel == NULL || !PQcancel(cancel, errbuf, sizeof(errbuf)))
		{
			if (cancel)
				PQfreeCancel(cancel);
			ereport(WARNING,
					(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
					 errmsg("could not send cancel request to participant \"%s\"",
							c->servername),
					 errdetail_internal("%s", cancel ? pchomp(errbuf) : "out of memory")));
			dtx_conn_disconnect(c);
			return false;
		}
		PQfreeCancel(cancel);
	}

	if (!dtx_conn_drain(c, deadline))
	{
		dtx_conn_disconnect(c);
		return false;
	}
	return true;
}

/*
 * dtx_conn_exec_quietly runs a cleanup command (ROLLBACK, ROLLBACK TO
 * SAVEPOINT ...) in an abort path: no ERROR, a WARNING if the remote
 * refuses, and the connection closed if it does not answer by the
 * deadline.  Returns true when the command succeeded.
 */
bool
dtx_conn_exec_quietly(DtxConn *c, const char *sql, TimestampTz deadline)
{
	bool		ok = true;

	if (!dtx_conn_cancel_and_drain(c, deadline))
		return false;

	c->in_flight = true;
	if (!PQsendQuery(c->conn, sql))
	{
		dtx_conn_disconnect(c);
		return false;
	}
	for (;;)
	{
		PGresult   *res = dtx_conn_next_result(c, deadline);

		if (res == NULL && c->conn == NULL)
			return false;		/* no answer in time, or COPY: closed */
		if (res == NULL)
			break;
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			ok = false;
			dtx_report_remote_error(WARNING, c, res, sql);
		}
		else
			PQclear(res);
	}
	c->in_flight = false;
	if (PQstatus(c->conn) != CONNECTION_OK)
	{
		dtx_conn_disconnect(c);
		return false;
	}
	return ok;
}

/*
 * dtx_report_remote_error raises (at elevel) the error in res — or, without
 * one, the connection's error — as if it happened here: the remote SQLSTATE,
 * message, detail and hint, the remote context, and the remote SQL and
 * participant as context.  A connection failure without a remote SQLSTATE
 * becomes DX001.  Frees res.  Returns only when elevel < ERROR.
 */
void
dtx_report_remote_error(int elevel, DtxConn *c, PGresult *res, const char *sql)
{
	char	   *sqlstate = NULL;
	char	   *primary = NULL;
	char	   *detail = NULL;
	char	   *hint = NULL;
	char	   *context = NULL;
	int			code;

#define COPY_FIELD(var, field) \
	do { const char *v_ = res ? PQresultErrorField(res, field) : NULL; \
		 var = v_ ? dtx_remote_text(v_) : NULL; } while (0)

	COPY_FIELD(sqlstate, PG_DIAG_SQLSTATE);
	COPY_FIELD(primary, PG_DIAG_MESSAGE_PRIMARY);
	COPY_FIELD(detail, PG_DIAG_MESSAGE_DETAIL);
	COPY_FIELD(hint, PG_DIAG_MESSAGE_HINT);
	COPY_FIELD(context, PG_DIAG_CONTEXT);
#undef COPY_FIELD
	PQclear(res);

	if (sqlstate && strlen(sqlstate) == 5)
		code = MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2],
							 sqlstate[3], sqlstate[4]);
	else
		code = ERRCODE_DTX_PARTICIPANT_UNAVAILABLE;

	if (c->conn == NULL || PQstatus(c->conn) != CONNECTION_OK)
	{
		/*
		 * The participant is gone (it may have said why, e.g. "terminating
		 * connection due to administrator command"): DX001 for the caller,
		 * with the remote's last words as detail.
		 */
		const char *why = primary;

		if (c->conn == NULL && c->copy_refused)
			why = "It answered with COPY, which pg_dtx does not support; the connection was closed.";
		else if (c->conn == NULL && c->timed_out)
			why = "It did not answer in time; the connection was closed.";
		if (why == NULL && c->conn != NULL && *PQerrorMessage(c->conn))
			why = dtx_remote_text(pchomp(PQerrorMessage(c->conn)));
		c->state_unknown = true;
		ereport(elevel,
				(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
				 errmsg("lost connection to participant \"%s\"", c->servername),
				 why ? errdetail_internal("%s", why) : 0,
				 sql ? errcontext("remote SQL command: %s", sql) : 0));
		return;
	}
	if (primary == NULL)
	{
		const char *connmsg = PQerrorMessage(c->conn);

		primary = *connmsg ? dtx_remote_text(pchomp(connmsg)) : pstrdup("unknown error");
	}

	ereport(elevel,
			(errcode(code),
			 errmsg_internal("%s", primary),
			 detail ? errdetail_internal("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0,
			 context ? errcontext("%s", context) : 0,
			 errcontext("participant \"%s\"", c->servername),
			 sql ? errcontext("remote SQL command: %s", sql) : 0));
}

/*
 * dtx_remote_text returns a palloc'd copy of s, text that a participant
 * sent (an error message, a field of one), fit to be shown: every byte that
 * is not part of a valid character of the database encoding, and every
 * ASCII control character but newline and tab, is written as \xNN.  So a
 * participant can neither put invalidly encoded text into our messages
 * (which would then fail to convert to the client's encoding) nor raw
 * control or protocol bytes into a terminal or a log.  Never ERRORs but
 * for out of memory.
 */
char *
dtx_remote_text(const char *s)
{
	StringInfoData buf;
	int			enc = GetDatabaseEncoding();
	const unsigned char *p = (const unsigned char *) s;
	int			len = strlen(s);

	initStringInfo(&buf);
	while (len > 0)
	{
		int			l;

		if (*p < 0x80)
		{
			if ((*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7f)
				appendStringInfo(&buf, "\\x%02x", *p);
			else
				appendStringInfoChar(&buf, (char) *p);
			p++;
			len--;
			continue;
		}
		l = pg_encoding_verifymbchar(enc, (const char *) p, len);
		if (l <= 0)
		{
			appendStringInfo(&buf, "\\x%02x", *p);
			p++;
			len--;
			continue;
		}
		appendBinaryStringInfo(&buf, (const char *) p, l);
		p += l;
		len -= l;
	}
	return buf.data;
}

/*
 * dtx_check_client_encoding ERRORs (0A000) if the participant's
 * client_encoding is no longer the database encoding pg_dtx connected with
 * (user SQL ran SET client_encoding, set_config, ...): text would then come
 * back in another encoding and enter tables invalidly encoded.  The change
 * is transactional on the participant, so the rollback (of the remote
 * transaction or savepoint) that follows the ERROR undoes it; the
 * connection is marked invalidated all the same, so it is closed and
 * reopened once no transaction uses it.
 */
void
dtx_check_client_encoding(DtxConn *c)
{
	int			enc;

	if (c->conn == NULL || PQstatus(c->conn) != CONNECTION_OK)
		return;
	enc = PQclientEncoding(c->conn);
	if (enc == GetDatabaseEncoding())
		return;
	c->invalidated = true;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("changing client_encoding is not supported on pg_dtx connections"),
			 errdetail("Participant \"%s\" now sends text in encoding \"%s\"; pg_dtx connections use the database encoding \"%s\".",
					   c->servername,
					   PG_VALID_ENCODING(enc) ? pg_encoding_to_char(enc) : "unknown",
					   GetDatabaseEncodingName()),
			 errhint("Remove the change of client_encoding from the SQL: the participant converts text to this database's encoding.")));
}

/*
 * dtx_conn_run_quietly_all sends sqls[i] on conns[i] (a command in flight
 * is cancelled first), all at once, and waits for every answer until
 * deadline.  out[i] tells what happened.  Never ERRORs: for the abort and
 * post-commit paths, where interrupts are held.  A connection that does not
 * answer in time, or breaks, is closed (its remote transaction, if any, is
 * then rolled back by the participant).
 */
void
dtx_conn_run_quietly_all(DtxConn **conns, char **sqls, int n,
						 TimestampTz deadline, DtxQuietResult *out)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		DtxConn    *c = conns[i];

		out[i].ok = false;
		out[i].lost = true;
		out[i].sqlstate[0] = '\0';
		out[i].message = NULL;
		if (!dtx_conn_cancel_and_drain(c, deadline))
			continue;
		c->in_flight = true;
		if (!PQsendQuery(c->conn, sqls[i]))
		{
			out[i].message = dtx_remote_text(pchomp(PQerrorMessage(c->conn)));
			dtx_conn_disconnect(c);
			continue;
		}
		out[i].lost = false;
	}

	(void) dtx_conn_wait(conns, n, deadline);

	for (i = 0; i < n; i++)
	{
		DtxConn    *c = conns[i];
		PGresult   *res;

		if (out[i].lost || c->conn == NULL)
		{
			out[i].lost = true;
			continue;
		}
		if (PQstatus(c->conn) != CONNECTION_OK || PQisBusy(c->conn))
		{
			out[i].lost = true;
			out[i].message = dtx_remote_text(pchomp(PQerrorMessage(c->conn)));
			dtx_conn_disconnect(c);
			continue;
		}
		out[i].ok = true;
		while ((res = dtx_conn_next_result(c, deadline)) != NULL)
		{
			ExecStatusType st = PQresultStatus(res);

			if (st == PGRES_FATAL_ERROR && out[i].ok)
			{
				const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);

				out[i].ok = false;
				strlcpy(out[i].sqlstate, code ? code : "", sizeof(out[i].sqlstate));
				out[i].message = dtx_remote_text(pchomp(PQresultErrorMessage(res)));
			}
			PQclear(res);
		}
		if (c->conn == NULL)
		{
			/* closed by dtx_conn_next_result */
			out[i].message = pstrdup(c->copy_refused
									 ? "the participant answered with COPY; the connection was closed"
									 : "no answer in time; the connection was closed");
			out[i].ok = false;
			out[i].lost = true;
			continue;
		}
		if (PQstatus(c->conn) != CONNECTION_OK)
		{
			if (out[i].ok || out[i].message == NULL)
				out[i].message = dtx_remote_text(pchomp(PQerrorMessage(c->conn)));
			out[i].ok = false;
			out[i].lost = true;
			dtx_conn_disconnect(c);
		}
	}
}

/*
 * dtx_conn_send_detached sends sql and returns without waiting; its result
 * is read by dtx_conn_reap_detached before the connection is used again
 * (so later commands on this connection run after it).  Never ERRORs: a
 * connection that cannot take the command is closed, with a WARNING.
 */
void
dtx_conn_send_detached(DtxConn *c, const char *sql)
{
	if (c->conn == NULL || !PQsendQuery(c->conn, sql))
	{
		ereport(WARNING,
				(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
				 errmsg("could not send \"%s\" to participant \"%s\"", sql, c->servername),
				 errdetail("It is left to recovery.")));
		dtx_count(DTX_COUNT_PHASE2_FAILURES);
		dtx_conn_disconnect(c);
		return;
	}
	(void) PQflush(c->conn);
	strlcpy(c->detached_sql, sql, sizeof(c->detached_sql));
	c->detached = true;
}

/*
 * dtx_conn_reap_detached reads the result of the detached command, waiting
 * at most dtx.cancel_timeout.  A failure is a WARNING ("does not exist"
 * counts as done); a participant that does not answer is disconnected.
 */
void
dtx_conn_reap_detached(DtxConn *c)
{
	PGresult   *res;
	bool		failed = false;
	TimestampTz deadline;

	c->detached = false;
	if (c->conn == NULL)
		return;
	c->in_flight = true;
	deadline = dtx_cleanup_deadline();
	while ((res = dtx_conn_next_result(c, deadline)) != NULL)
	{
		const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (PQresultStatus(res) == PGRES_FATAL_ERROR &&
			!(code && strcmp(code, "42704") == 0) && !failed)
		{
			failed = true;
			dtx_count(DTX_COUNT_PHASE2_FAILURES);
			ereport(WARNING,
					(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
					 errmsg("\"%s\" failed on participant \"%s\"", c->detached_sql, c->servername),
					 errdetail("%s", dtx_remote_text(pchomp(PQresultErrorMessage(res)))),
					 errhint("The recovery worker will finish it.")));
		}
		PQclear(res);
	}
	if (c->conn == NULL)
	{
		/* closed by dtx_conn_next_result: no answer in time, or COPY */
		ereport(WARNING,
				(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
				 errmsg("participant \"%s\" did not answer \"%s\"", c->servername, c->detached_sql),
				 errdetail("%s It is left to recovery.",
						   c->copy_refused ? "It answered with COPY." : "No answer in time.")));
		dtx_count(DTX_COUNT_PHASE2_FAILURES);
		return;
	}
	c->in_flight = false;
	if (PQstatus(c->conn) != CONNECTION_OK)
		dtx_conn_disconnect(c);
}

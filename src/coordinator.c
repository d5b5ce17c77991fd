/*-------------------------------------------------------------------------
 *
 * coordinator.c
 *	  Remote work inside the local transaction.
 *
 * This file owns the state of remote transactions: the first dtx.exec or
 * dtx.query on a participant in a local transaction starts a remote
 * transaction at the local isolation level (piggybacked on the same round
 * trip as the user's SQL); local subtransactions are mirrored as remote
 * savepoints s2, s3, ... so ROLLBACK TO SAVEPOINT undoes remote work too;
 * and the transaction callbacks end every remote transaction with the local
 * one: COMMIT at pre-commit (an ERROR there aborts the local transaction),
 * ROLLBACK on abort (never an ERROR; a participant that does not answer is
 * disconnected, which rolls it back).
 *
 * Remote SQL that ends the remote transaction itself (COMMIT, ROLLBACK in
 * the text given to dtx.exec) is detected afterwards and refused: the
 * local transaction aborts and the connection is discarded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_type.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/tuplestore.h"

#include "connection.h"
#include "coordinator.h"
#include "option.h"
#include "pg_dtx.h"
#include "twophase.h"

PG_FUNCTION_INFO_V1(dtx_exec);
PG_FUNCTION_INFO_V1(dtx_query);
PG_FUNCTION_INFO_V1(dtx_connections);
PG_FUNCTION_INFO_V1(dtx_disconnect);
PG_FUNCTION_INFO_V1(dtx_probe);

/*
 * True once a remote transaction was started in the current local
 * transaction; lets the callbacks return at once in transactions that
 * never touched a participant.
 */
static bool coord_xact_active = false;

/* Where rows of dtx.query go */
typedef struct CoordQueryDest
{
	Tuplestorestate *tupstore;
	TupleDesc	tupdesc;
	AttInMetadata *attinmeta;
} CoordQueryDest;

static const char *
coord_isolation_sql(void)
{
	switch (XactIsoLevel)
	{
		case XACT_READ_UNCOMMITTED:
		case XACT_READ_COMMITTED:
			return "READ COMMITTED";
		case XACT_REPEATABLE_READ:
			return "REPEATABLE READ";
		case XACT_SERIALIZABLE:
			return "SERIALIZABLE";
	}
	return "READ COMMITTED";
}

/*
 * coord_connect finds the participant, checks the caller may use it and
 * returns its connection for the current user.
 */
static DtxConn *
coord_connect(const char *servername)
{
	ForeignServer *server = dtx_get_participant(servername);
	UserMapping *user = GetUserMapping(GetUserId(), server->serverid);
	DtxConn    *c = dtx_conn_get(server, user);

	if (c->state_unknown && c->xact_depth > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DTX_PARTICIPANT_STATE_UNKNOWN),
				 errmsg("the state of participant \"%s\" is unknown in this transaction",
						c->servername),
				 errhint("Roll back the transaction.")));
	return c;
}

/*
 * coord_prepare_remote brings the remote transaction nesting up to the
 * local one.  Returns the commands to send in front of the user's SQL when
 * no remote transaction is open yet (START TRANSACTION and savepoints, one
 * round trip for all), else "" after running any savepoints needed.
 */
static char *
coord_prepare_remote(DtxConn *c, int curlevel)
{
	StringInfoData buf;
	int			level;

	initStringInfo(&buf);
	if (c->xact_depth == 0)
	{
		appendStringInfo(&buf, "START TRANSACTION ISOLATION LEVEL %s%s%s; ",
						 coord_isolation_sql(),
						 XactReadOnly ? " READ ONLY" : "",
						 XactDeferrable ? " DEFERRABLE" : "");
		for (level = 2; level <= curlevel; level++)
			appendStringInfo(&buf, "SAVEPOINT s%d; ", level);
		return buf.data;
	}

	if (c->xact_depth < curlevel)
	{
		for (level = c->xact_depth + 1; level <= curlevel; level++)
			appendStringInfo(&buf, "SAVEPOINT s%d; ", level);
		dtx_conn_exec_command(c, buf.data);
		c->xact_depth = curlevel;
		resetStringInfo(&buf);
	}
	return buf.data;
}

/*
 * coord_verify_text ERRORs (22021) unless the text a participant returned
 * for column col is valid in the database encoding (and has no NUL byte):
 * input functions such as textin trust their input, so invalidly encoded
 * text would otherwise enter tables.
 */
static void
coord_verify_text(DtxConn *c, const char *value, int len, int col)
{
	if (pg_verifymbstr(value, len, true))
		return;
	c->invalidated = true;		/* reopened once the transaction is over */
	ereport(ERROR,
			(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
			 errmsg("participant \"%s\" returned text that is not valid in encoding \"%s\"",
					c->servername, GetDatabaseEncodingName()),
			 errdetail("Column %d of the remote result holds an invalid byte sequence.", col + 1),
			 errhint("Do not change client_encoding on pg_dtx connections.")));
}

/*
 * coord_store_rows appends the rows of one result to dest, checking that
 * their shape matches the column definition list.
 */
static void
coord_store_rows(CoordQueryDest *dest, PGresult *res, DtxConn *c)
{
	int			nfields = PQnfields(res);
	int			ntuples = PQntuples(res);
	char	  **values;
	int			row;

	if (nfields != dest->tupdesc->natts)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("remote query result rowtype does not match the column definition list"),
				 errdetail("The query on participant \"%s\" returned %d columns, the column definition list has %d.",
						   c->servername, nfields, dest->tupdesc->natts)));
	if (ntuples == 0)
		return;

	values = palloc(sizeof(char *) * nfields);
	for (row = 0; row < ntuples; row++)
	{
		HeapTuple	tuple;
		int			i;

		for (i = 0; i < nfields; i++)
		{
			if (PQgetisnull(res, row, i))
			{
				values[i] = NULL;
				continue;
			}
			values[i] = PQgetvalue(res, row, i);
			coord_verify_text(c, values[i], PQgetlength(res, row, i), i);
		}
		tuple = BuildTupleFromCStrings(dest->attinmeta, values);
		tuplestore_puttuple(dest->tupstore, tuple);
		heap_freetuple(tuple);
	}
	pfree(values);
}

/*
 * coord_tag_writes: does a command with this tag surely write (so that the
 * remote transaction has an xid)?  Used to skip asking the participant at
 * commit.  SELECT and other tags are "don't know" (a SELECT may call a
 * function that writes): those participants are asked.
 */
static bool
coord_tag_writes(const char *tag)
{
	static const char *const writes[] = {
		"INSERT ", "UPDATE ", "DELETE ", "MERGE ", "CREATE ", "DROP ",
		"ALTER ", "TRUNCATE", "GRANT", "REVOKE", "COMMENT", NULL
	};
	int			i;

	for (i = 0; writes[i]; i++)
		if (strncmp(tag, writes[i], strlen(writes[i])) == 0)
			return true;
	return false;
}

/*
 * coord_run runs user SQL on a participant inside the global transaction
 * and returns the rows affected by its last statement.  With dest, the rows
 * of every row-returning statement go there (read one at a time, so a big
 * result is never held twice).
 *
 * On a remote error the remote error is raised here; the remote transaction
 * (or savepoint) is left for the abort callbacks.  An ERROR while results
 * are still arriving leaves the connection in_flight: the abort path
 * cancels the remote command.
 */
static int64
coord_run(DtxConn *c, const char *sql, CoordQueryDest *dest)
{
	int			curlevel = GetCurrentTransactionNestLevel();
	bool		fresh = (c->xact_depth == 0);
	char	   *prefix = coord_prepare_remote(c, curlevel);
	char	   *full = *prefix ? psprintf("%s%s", prefix, sql) : (char *) sql;
	PGresult   *volatile error = NULL;
	PGresult   *volatile cur = NULL;
	int64		rows = 0;
	PGTransactionStatusType tstatus;

	dtx_conn_send(c, full);
	if (fresh)
	{
		/* from here on the remote may hold a transaction of ours */
		c->xact_depth = curlevel;
		coord_xact_active = true;
	}
	if (dest)
		(void) PQsetSingleRowMode(c->conn);

	PG_TRY();
	{
		while ((cur = dtx_conn_get_result(c)) != NULL)
		{
			ExecStatusType st = PQresultStatus(cur);

			if (st == PGRES_FATAL_ERROR)
			{
				if (error == NULL)
				{
					error = cur;
					cur = NULL;
				}
			}
			else if (error == NULL && (st == PGRES_SINGLE_TUPLE ||
									   st == PGRES_TUPLES_OK))
			{
				if (dest)
					coord_store_rows(dest, cur, c);
				if (st == PGRES_TUPLES_OK)
				{
					char	   *n = PQcmdTuples(cur);

					rows = *n ? strtoi64(n, NULL, 10) : 0;
				}
			}
			else if (error == NULL && st == PGRES_COMMAND_OK)
			{
				char	   *n = PQcmdTuples(cur);

				if (!c->remote_wrote && coord_tag_writes(PQcmdStatus(cur)))
					c->remote_wrote = true;

				rows = *n ? strtoi64(n, NULL, 10) : 0;
			}
			PQclear(cur);
			cur = NULL;
		}
	}
	PG_CATCH();
	{
		PQclear(cur);
		PQclear(error);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (c->conn == NULL && c->copy_refused)
	{
		/*
		 * dtx_conn_get_result closed the connection, which rolled back the
		 * remote transaction.  If this command began it, nothing else was
		 * lost: the connection is reopened at the next use.  Otherwise the
		 * global transaction can only abort (DX003 at commit, even after a
		 * rollback to a savepoint).
		 */
		PQclear(error);
		if (fresh)
			c->xact_depth = 0;
		else
			c->state_unknown = true;
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("COPY is not supported by dtx.exec/dtx.query"),
				 errdetail("Participant \"%s\" started a COPY; the connection was closed, which rolled back its remote transaction.",
						   c->servername),
				 errhint("Move rows with INSERT ... SELECT over dtx.query, or with dtx.exec and INSERT ... VALUES."),
				 errcontext("remote SQL command: %s", sql)));
	}
	if (c->conn == NULL || PQstatus(c->conn) != CONNECTION_OK)
	{
		c->state_unknown = true;
		dtx_report_remote_error(ERROR, c, error, full);
	}

	tstatus = PQtransactionStatus(c->conn);
	if (error != NULL)
	{
		/*
		 * A client_encoding changed before the error lasts until the
		 * rollback that follows: close the connection once the
		 * transaction is over rather than trust it.
		 */
		if (PQclientEncoding(c->conn) != GetDatabaseEncoding())
			c->invalidated = true;
		/*
		 * Nothing ran if the text did not parse: then a fresh remote
		 * transaction was never started.
		 */
		if (fresh && tstatus == PQTRANS_IDLE)
			c->xact_depth = 0;
		else if (tstatus != PQTRANS_INERROR)
			c->state_unknown = true;
		dtx_report_remote_error(ERROR, c, error, sql);
	}
	if (tstatus != PQTRANS_INTRANS)
	{
		c->state_unknown = true;
		ereport(ERROR,
				(errcode(ERRCODE_DTX_PARTICIPANT_STATE_UNKNOWN),
				 errmsg("the command ended the remote transaction on participant \"%s\"",
						c->servername),
				 errdetail("The remote work of this transaction may have been committed or rolled back on its own."),
				 errhint("Do not send transaction control commands through pg_dtx: participants commit and roll back with the local transaction.")));
	}
	dtx_check_client_encoding(c);
	if (full != sql)
		pfree(full);
	pfree(prefix);
	return rows;
}

/*
 * dtx.exec(server name, sql text) returns bigint: run a command on the
 * participant inside the current global transaction; rows affected by its
 * last statement.
 */
Datum
dtx_exec(PG_FUNCTION_ARGS)
{
	DtxConn    *c;
	char	   *sql;

	dtx_check_not_null(fcinfo, 0, "server");
	dtx_check_not_null(fcinfo, 1, "sql");
	sql = text_to_cstring(PG_GETARG_TEXT_PP(1));
	c = coord_connect(NameStr(*PG_GETARG_NAME(0)));
	PG_RETURN_INT64(coord_run(c, sql, NULL));
}

/*
 * dtx.query(server name, sql text) returns setof record: run a query on
 * the participant inside the current global transaction and return its
 * rows, typed by the column definition list at the call site.
 */
Datum
dtx_query(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CoordQueryDest dest;
	DtxConn    *c;
	char	   *sql;

	dtx_check_not_null(fcinfo, 0, "server");
	dtx_check_not_null(fcinfo, 1, "sql");
	sql = text_to_cstring(PG_GETARG_TEXT_PP(1));

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		rsinfo->expectedDesc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("dtx.query must be called in FROM with a column definition list"),
				 errhint("For example: SELECT * FROM dtx.query('server', 'SELECT 1') AS t(x int).")));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	dest.tupstore = rsinfo->setResult;
	dest.tupdesc = rsinfo->setDesc;
	dest.attinmeta = TupleDescGetAttInMetadata(rsinfo->setDesc);

	c = coord_connect(NameStr(*PG_GETARG_NAME(0)));
	(void) coord_run(c, sql, &dest);
	return (Datum) 0;
}

/*
 * coord_participants returns the connections that have a remote
 * transaction open, in an array palloc'd in the current context.
 */
static DtxConn **
coord_participants(int *n)
{
	HASH_SEQ_STATUS scan;
	DtxConn    *c;
	DtxConn   **arr;
	int			count = 0;

	arr = palloc(sizeof(DtxConn *) * hash_get_num_entries(dtx_conn_hash()));
	hash_seq_init(&scan, dtx_conn_hash());
	while ((c = (DtxConn *) hash_seq_search(&scan)))
	{
		if (c->xact_depth > 0)
			arr[count++] = c;
	}
	*n = count;
	return arr;
}

/*
 * coord_pre_commit refuses to commit when a participant's state is unknown,
 * then runs the commit protocol (twophase.c).  Runs at
 * XACT_EVENT_PRE_COMMIT, where an ERROR aborts the local transaction and
 * every participant.
 */
static void
coord_pre_commit(void)
{
	int			n;
	DtxConn   **parts = coord_participants(&n);
	int			i;

	for (i = 0; i < n; i++)
	{
		if (parts[i]->state_unknown || parts[i]->conn == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_DTX_PARTICIPANT_STATE_UNKNOWN),
					 errmsg("cannot commit: the state of participant \"%s\" is unknown",
							parts[i]->servername),
					 errdetail("The connection was lost or a remote command could not be undone.")));
	}

	twophase_pre_commit(parts, n);
	pfree(parts);
}

/*
 * coord_end_xact forgets the remote transactions once the local one ended.
 * On abort, each participant still in a transaction is rolled back: a
 * command in flight is cancelled first, and a participant that does not
 * answer by dtx.cancel_timeout is disconnected (which rolls it back too).
 * A connection whose state is unknown is closed.  Never ERRORs.
 */
static void
coord_end_xact(bool abort)
{
	HASH_SEQ_STATUS scan;
	DtxConn    *c;
	TimestampTz deadline = 0;

	hash_seq_init(&scan, dtx_conn_hash());
	while ((c = (DtxConn *) hash_seq_search(&scan)))
	{
		if (c->outside_xact)
			continue;
		if (c->conn != NULL && !c->detached && (c->xact_depth > 0 || c->in_flight))
		{
			if (!abort)
				c->state_unknown = true;	/* cannot happen: left open */
			else if (c->in_flight ||
					 PQtransactionStatus(c->conn) != PQTRANS_IDLE)
			{
				if (deadline == 0)
					deadline = dtx_cleanup_deadline();
				if (!dtx_conn_exec_quietly(c, "ROLLBACK", deadline))
					c->state_unknown = true;
			}
		}
		if (c->state_unknown)
			dtx_conn_disconnect(c);
		c->xact_depth = 0;
		c->in_flight = false;
		c->state_unknown = false;
		c->remote_wrote = false;
	}
	coord_xact_active = false;
}

/*
 * coord_xact_callback ends remote transactions with the local one.  Fallible
 * work happens at PRE_COMMIT only; COMMIT and ABORT never ERROR.
 */
void
coord_xact_callback(XactEvent event)
{
	if (!coord_xact_active)
		return;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			coord_pre_commit();
			break;
		case XACT_EVENT_PRE_PREPARE:
			{
				int			n;

				pfree(coord_participants(&n));
				if (n > 0)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("cannot PREPARE a transaction that has pg_dtx participants"),
							 errhint("pg_dtx commits participants together with the local transaction; use COMMIT.")));
				break;
			}
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			twophase_post_commit();
			coord_end_xact(false);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			twophase_abort();
			coord_end_xact(true);
			break;
	}
}

/*
 * dtx_subxact_callback mirrors the end of a local subtransaction on every
 * participant that holds the matching savepoint: RELEASE SAVEPOINT when it
 * commits, ROLLBACK TO SAVEPOINT when it aborts.  If a rollback to a
 * savepoint fails, the remote transaction holds work that the local one
 * rolled back: it is marked state_unknown and the top-level commit is
 * refused.
 */
void
dtx_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					 SubTransactionId parentSubid, void *arg)
{
	HASH_SEQ_STATUS scan;
	DtxConn    *c;
	int			curlevel;
	TimestampTz deadline = 0;

	if (!coord_xact_active)
		return;
	if (event != SUBXACT_EVENT_PRE_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;

	curlevel = GetCurrentTransactionNestLevel();
	hash_seq_init(&scan, dtx_conn_hash());
	while ((c = (DtxConn *) hash_seq_search(&scan)))
	{
		char		sql[96];

		if (c->xact_depth < curlevel)
			continue;

		if (!c->state_unknown && c->conn != NULL)
		{
			if (event == SUBXACT_EVENT_PRE_COMMIT_SUB)
			{
				snprintf(sql, sizeof(sql), "RELEASE SAVEPOINT s%d", curlevel);
				dtx_conn_exec_command(c, sql);
			}
			else
			{
				snprintf(sql, sizeof(sql),
						 "ROLLBACK TO SAVEPOINT s%d; RELEASE SAVEPOINT s%d",
						 curlevel, curlevel);
				if (deadline == 0)
					deadline = dtx_cleanup_deadline();
				if (!dtx_conn_exec_quietly(c, sql, deadline))
					c->state_unknown = true;
			}
		}
		c->xact_depth = curlevel - 1;
	}
}

/*
 * dtx.connections() returns this backend's cached connections: server oid
 * and name, user oid, remote backend pid, whether a remote transaction is
 * open and its savepoint depth.  Backs the dtx.participants view.
 */
Datum
dtx_connections(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS scan;
	DtxConn    *c;

	InitMaterializedSRF(fcinfo, 0);
	hash_seq_init(&scan, dtx_conn_hash());
	while ((c = (DtxConn *) hash_seq_search(&scan)))
	{
		Datum		values[6];
		bool		nulls[6] = {0};

		if (c->conn == NULL)
			continue;
		values[0] = ObjectIdGetDatum(c->key.serverid);
		values[1] = CStringGetTextDatum(c->servername);
		values[2] = ObjectIdGetDatum(c->key.userid);
		values[3] = Int32GetDatum(c->remote_pid);
		values[4] = BoolGetDatum(c->xact_depth > 0);
		values[5] = BoolGetDatum(PQstatus(c->conn) == CONNECTION_OK &&
								 !c->state_unknown);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * dtx.disconnect(server name default null) returns int: closes this
 * backend's idle connections to the server (or to all servers); returns how
 * many it closed.  A connection in use by the current transaction is left
 * open, with a WARNING.
 */
Datum
dtx_disconnect(PG_FUNCTION_ARGS)
{
	HASH_SEQ_STATUS scan;
	DtxConn    *c;
	Oid			serverid = InvalidOid;
	int			closed = 0;

	if (!PG_ARGISNULL(0))
		serverid = GetForeignServerByName(NameStr(*PG_GETARG_NAME(0)),
										  false)->serverid;

	hash_seq_init(&scan, dtx_conn_hash());
	while ((c = (DtxConn *) hash_seq_search(&scan)))
	{
		if (c->conn == NULL)
			continue;
		if (OidIsValid(serverid) && c->key.serverid != serverid)
			continue;
		if (c->xact_depth > 0)
		{
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("cannot close the connection to participant \"%s\": it is used by the current transaction",
							c->servername)));
			continue;
		}
		dtx_conn_disconnect(c);
		closed++;
	}
	PG_RETURN_INT32(closed);
}

typedef struct CoordProbe
{
	ForeignServer *server;
	Datum	   *values;
	bool	   *nulls;
	DtxConn		tmp;
} CoordProbe;

static void
coord_probe_call(void *arg)
{
	CoordProbe *p = arg;
	UserMapping *user;
	PGresult   *res;

	dtx_check_participant_wrapper(p->server);
	user = GetUserMapping(GetUserId(), p->server->serverid);
	dtx_conn_open_temp(&p->tmp, p->server, user);
	res = dtx_conn_exec(&p->tmp,
						"SELECT pg_catalog.current_setting('max_prepared_transactions')::pg_catalog.int4, pg_catalog.current_setting('server_version')");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		dtx_report_remote_error(ERROR, &p->tmp, res, NULL);
	p->values[1] = BoolGetDatum(true);
	p->values[2] = Int32GetDatum(atoi(PQgetvalue(res, 0, 0)));
	p->values[3] = CStringGetTextDatum(PQgetvalue(res, 0, 1));
	p->nulls[4] = true;
	PQclear(res);
}

/*
 * coord_probe_one connects to one server on a fresh connection (not the
 * cached one, so no transaction is touched) and reads its
 * max_prepared_transactions and version, each step bounded by
 * dtx.connect_timeout and dtx.remote_timeout.  Errors are caught and
 * returned as text, except this backend's own cancel and statement_timeout
 * (dtx_try re-throws them); the connection is closed on every path.
 */
static void
coord_probe_one(ForeignServer *server, Datum *values, bool *nulls)
{
	CoordProbe	probe = {server, values, nulls};
	ErrorData  *volatile edata = NULL;

	memset(&probe.tmp, 0, sizeof(probe.tmp));
	strlcpy(probe.tmp.servername, server->servername, NAMEDATALEN);
	PG_TRY();
	{
		edata = dtx_try(coord_probe_call, &probe);
	}
	PG_FINALLY();
	{
		dtx_conn_disconnect(&probe.tmp);
	}
	PG_END_TRY();
	if (edata == NULL)
		return;
	values[1] = BoolGetDatum(false);
	nulls[2] = nulls[3] = true;
	values[4] = CStringGetTextDatum(edata->detail
									? psprintf("%s: %s", edata->message, edata->detail)
									: edata->message);
	FreeErrorData(edata);
}

/*
 * dtx.probe(server name default null) returns table (server, reachable,
 * max_prepared_transactions, server_version, error): connects to each
 * participant (or the one named) as the current user and reports whether
 * it answers and whether it can take part in two-phase commit.  Like
 * dtx.exec, it needs USAGE on the server: a named server without it is an
 * ERROR (42501), and the list of every participant leaves out the servers
 * the caller has no USAGE on.
 */
Datum
dtx_probe(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *servers = NIL;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);

	if (!PG_ARGISNULL(0))
	{
		ForeignServer *server = GetForeignServerByName(NameStr(*PG_GETARG_NAME(0)), false);
		AclResult	aclresult = pg_foreign_server_aclcheck(server->serverid,
														   GetUserId(), ACL_USAGE);

		if (aclresult != ACLCHECK_OK)
			aclcheck_error(aclresult, OBJECT_FOREIGN_SERVER, server->servername);
		servers = list_make1(server);
	}
	else
	{
		Relation	rel = table_open(ForeignServerRelationId, AccessShareLock);
		TableScanDesc scan = table_beginscan_catalog(rel, 0, NULL);
		HeapTuple	tup;

		while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		{
			Form_pg_foreign_server form = (Form_pg_foreign_server) GETSTRUCT(tup);
			ForeignDataWrapper *fdw = GetForeignDataWrapper(form->srvfdw);

			if ((strcmp(fdw->fdwname, "pg_dtx") == 0 ||
				 strcmp(fdw->fdwname, "postgres_fdw") == 0) &&
				pg_foreign_server_aclcheck(form->oid, GetUserId(),
										   ACL_USAGE) == ACLCHECK_OK)
				servers = lappend(servers, GetForeignServer(form->oid));
		}
		table_endscan(scan);
		table_close(rel, AccessShareLock);
	}

	foreach(lc, servers)
	{
		ForeignServer *server = lfirst(lc);
		Datum		values[5];
		bool		nulls[5] = {0};

		values[0] = CStringGetTextDatum(server->servername);
		coord_probe_one(server, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*-------------------------------------------------------------------------
 *
 * recovery.c
 *	  Resolution of in-doubt prepared transactions, and the admin surface:
 *	  dtx.in_doubt, dtx.recover(), dtx.xa_recover/xa_commit/xa_rollback,
 *	  dtx.stats.
 *
 * A pass lists, on each participant, the prepared transactions whose GID
 * carries this cluster's system identifier and this database (never any
 * other), then decides each one:
 *	- its coordinator transaction is live (in the shared registry, or still
 *	  in progress): skipped;
 *	- a decision row exists in dtx.decisions: COMMIT PREPARED;
 *	- no decision row: ROLLBACK PREPARED (presumed abort).
 * "Does not exist" counts as done.  The order matters: the participant is
 * listed first, then the registry is read, then the decision is looked up
 * with a fresh snapshot.  A transaction that was prepared before the
 * listing and is missing from the registry has finished its local commit
 * or abort (or died), so the lookup sees its outcome.
 *
 * Finished decision rows are deleted in batches: the rows are read first,
 * then the registry, then every participant is listed; a row goes when its
 * transaction was not live and none of its participants (all listed
 * successfully) still holds one of its GIDs.  Rows of transactions still in
 * phase 2 are protected by the registry, or by their GIDs still being there.
 *
 * The pass runs in the caller's transaction (the worker opens one per pass);
 * each participant is handled in a subtransaction, so one that is down does
 * not stop the others.  Connections are opened for the pass and closed at
 * its end.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_foreign_data_wrapper.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_user_mapping.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/xid8.h"

#include "connection.h"
#include "option.h"
#include "pg_dtx.h"
#include "recovery.h"
#include "shmem.h"
#include "twophase.h"

PG_FUNCTION_INFO_V1(dtx_in_doubt_list);
PG_FUNCTION_INFO_V1(dtx_recover);
PG_FUNCTION_INFO_V1(dtx_xa_recover);
PG_FUNCTION_INFO_V1(dtx_xa_commit);
PG_FUNCTION_INFO_V1(dtx_xa_rollback);
PG_FUNCTION_INFO_V1(dtx_stats);

#define REC_DELETE_BATCH 10000

typedef enum RecDecision
{
	REC_COMMIT,
	REC_ABORT,
	REC_LIVE					/* coordinator transaction still running */
} RecDecision;

static const char *const rec_decision_names[] = {
	"commit", "abort", "in progress"
};

/* One prepared transaction on a participant */
typedef struct RecPrepared
{
	char	   *gid;
	TimestampTz prepared;
	char	   *owner;
	bool		ours;
	DtxGid		id;				/* valid if ours */
} RecPrepared;

/* One participant in a pass */
typedef struct RecServer
{
	Oid			serverid;
	char	   *name;
	bool		listed;			/* listed successfully */
	uint64	   *remaining;		/* fxids still prepared there after the pass */
	int			nremaining;
} RecServer;

/* A pass */
typedef struct RecPass
{
	bool		resolve;		/* false: only report (dtx.in_doubt) */
	Tuplestorestate *ts;		/* report rows, or NULL */
	TupleDesc	td;
	DtxConn   **conns;			/* connections opened for the pass */
	int			nconns;
	int			maxconns;
	DtxRecoveryTotals *totals;
} RecPass;

/* ----------------------------------------------------------------
 * Helpers
 * ----------------------------------------------------------------
 */

static Oid
rec_decisions_relid(void)
{
	Oid			relid = get_relname_relid("decisions", get_namespace_oid("dtx", false));

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table dtx.decisions does not exist")));
	return relid;
}

/*
 * rec_has_decision: does dtx.decisions hold a row for (fxid, incarnation)?
 * Read with a fresh snapshot, whatever the caller's isolation level.
 */
static bool
rec_has_decision(FullTransactionId fxid, uint64 incarnation)
{
	Relation	rel = table_open(rec_decisions_relid(), AccessShareLock);
	Oid			indexoid = RelationGetPrimaryKeyIndex(rel);
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_XID8EQ,
				FullTransactionIdGetDatum(fxid));
	scan = systable_beginscan(rel, indexoid, OidIsValid(indexoid), snap, 1, &key);
	while (!found && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, 2, RelationGetDescr(rel), &isnull);

		found = !isnull && (uint64) DatumGetInt64(d) == incarnation;
	}
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * rec_decide: what must happen to a prepared transaction of ours.  live is
 * the registry, read after the participant was listed.  A transaction of an
 * earlier incarnation (before a crash or restart) cannot be live; its full
 * xid may have been handed out again since, which is why the decision row
 * must match the incarnation too.
 */
static RecDecision
rec_decide(DtxGid *id, uint64 *live, int nlive)
{
	if (id->incarnation == dtx_shared->incarnation &&
		(dtx_registry_contains(live, nlive, U64FromFullTransactionId(id->fxid)) ||
		 TransactionIdIsInProgress(XidFromFullTransactionId(id->fxid))))
		return REC_LIVE;
	return rec_has_decision(id->fxid, id->incarnation) ? REC_COMMIT : REC_ABORT;
}

/*
 * rec_find_mapping returns a user mapping to reach serverid: userid's (or
 * PUBLIC) if there is one, else any mapping of the server, else NULL.
 */
static UserMapping *
rec_find_mapping(Oid serverid, Oid userid)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			other = InvalidOid;
	bool		found = false;

	if (SearchSysCacheExists2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(userid),
							  ObjectIdGetDatum(serverid)) ||
		SearchSysCacheExists2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(InvalidOid),
							  ObjectIdGetDatum(serverid)))
		return GetUserMapping(userid, serverid);

	rel = table_open(UserMappingRelationId, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_user_mapping um = (Form_pg_user_mapping) GETSTRUCT(tup);

		if (um->umserver == serverid)
		{
			other = um->umuser;
			found = true;
			break;
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found ? GetUserMapping(other, serverid) : NULL;
}

/*
 * rec_conn returns the pass's connection to server for user mapping um,
 * opening it if needed.
 */
static DtxConn *
rec_conn(RecPass *pass, ForeignServer *server, UserMapping *um)
{
	int			i;
	DtxConn    *c;

	for (i = 0; i < pass->nconns; i++)
	{
		c = pass->conns[i];
		if (c->key.serverid == server->serverid && c->key.userid == um->userid &&
			c->conn != NULL)
			return c;
	}
	if (pass->nconns == pass->maxconns)
	{
		pass->maxconns *= 2;
		pass->conns = repalloc(pass->conns, sizeof(DtxConn *) * pass->maxconns);
	}
	c = palloc0(sizeof(DtxConn));
	dtx_conn_open_temp(c, server, um);
	pass->conns[pass->nconns++] = c;
	return c;
}

static void
rec_close_all(RecPass *pass)
{
	int			i;

	for (i = 0; i < pass->nconns; i++)
		dtx_conn_disconnect(pass->conns[i]);
	pass->nconns = 0;
}

/*
 * rec_list returns the prepared transactions of the participant's database
 * (only pg_dtx's of this database when ours_only), oldest first.
 */
static List *
rec_list(DtxConn *c, bool ours_only)
{
	StringInfoData sql;
	PGresult   *res;
	List	   *out = NIL;
	int			i;

	initStringInfo(&sql);
	appendStringInfoString(&sql,
						   "SELECT gid, pg_catalog.floor(extract(epoch FROM prepared)"
						   " OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8, owner"
						   " FROM pg_catalog.pg_prepared_xacts"
						   " WHERE database OPERATOR(pg_catalog.=) pg_catalog.current_database()");
	if (ours_only)
		appendStringInfo(&sql, " AND pg_catalog.starts_with(gid, '%s')",
						 dtx_gid_prefix(MyDatabaseId));
	appendStringInfoString(&sql, " ORDER BY prepared");

	res = dtx_conn_exec(c, sql.data);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		dtx_report_remote_error(ERROR, c, res, sql.data);
	for (i = 0; i < PQntuples(res); i++)
	{
		RecPrepared *p = palloc0(sizeof(RecPrepared));
		int64		usec = strtoi64(PQgetvalue(res, i, 1), NULL, 10);

		p->gid = pstrdup(PQgetvalue(res, i, 0));
		p->prepared = usec - ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) *
							  SECS_PER_DAY * USECS_PER_SEC);
		p->owner = pstrdup(PQgetvalue(res, i, 2));
		p->ours = dtx_gid_is_ours(p->gid, &p->id);
		out = lappend(out, p);
	}
	PQclear(res);
	return out;
}

/*
 * rec_report appends a row to the pass's report:
 * (server, gid, prepared_at, coordinator_xid, decision, owner, action, error)
 */
static void
rec_report(RecPass *pass, const char *server, RecPrepared *p, int decision,
		   const char *action, const char *error)
{
	Datum		values[8];
	bool		nulls[8] = {false};

	if (pass->ts == NULL)
		return;
	values[0] = CStringGetTextDatum(server);
	if (p)
	{
		values[1] = CStringGetTextDatum(p->gid);
		values[2] = TimestampTzGetDatum(p->prepared);
		values[3] = FullTransactionIdGetDatum(p->id.fxid);
		values[5] = CStringGetTextDatum(p->owner);
	}
	else
		nulls[1] = nulls[2] = nulls[3] = nulls[5] = true;
	if (decision >= 0)
		values[4] = CStringGetTextDatum(rec_decision_names[decision]);
	else
		nulls[4] = true;
	if (action)
		values[6] = CStringGetTextDatum(action);
	else
		nulls[6] = true;
	if (error)
		values[7] = CStringGetTextDatum(error);
	else
		nulls[7] = true;
	tuplestore_putvalues(pass->ts, pass->td, values, nulls);
}

/*
 * rec_finish runs COMMIT/ROLLBACK PREPARED for p; NULL on success ("does
 * not exist" included, *gone set), else the error text.
 */
static char *
rec_finish(DtxConn *c, const char *gid, bool commit, bool *gone)
{
	char	   *sql = psprintf("%s PREPARED '%s'", commit ? "COMMIT" : "ROLLBACK", gid);
	PGresult   *res = dtx_conn_exec(c, sql);
	char	   *err = NULL;

	*gone = false;
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (code && strcmp(code, "42704") == 0)
			*gone = true;
		else
			err = dtx_remote_text(pchomp(PQresultErrorMessage(res)));
	}
	PQclear(res);
	pfree(sql);
	return err;
}

static void
rec_remaining_add(RecServer *srv, uint64 fxid)
{
	if (srv->remaining == NULL)
		srv->remaining = palloc(sizeof(uint64) * 16);
	else if ((srv->nremaining & 15) == 0)
		srv->remaining = repalloc(srv->remaining,
								  sizeof(uint64) * (srv->nremaining + 16));
	srv->remaining[srv->nremaining++] = fxid;
}

/*
 * rec_server handles one participant: list, decide, resolve (or report).
 * May ERROR (the caller runs it in a subtransaction).
 */
static void
rec_server(RecPass *pass, RecServer *srv)
{
	ForeignServer *server = GetForeignServer(srv->serverid);
	UserMapping *um = rec_find_mapping(srv->serverid, GetUserId());
	DtxConn    *lc;
	List	   *prepared;
	ListCell   *lcell;
	uint64	   *live;
	int			nlive;

	if (um == NULL)
	{
		srv->listed = true;		/* nobody can have used it */
		return;
	}
	lc = rec_conn(pass, server, um);
	prepared = rec_list(lc, true);
	live = dtx_registry_snapshot(MyDatabaseId, &nlive);

	foreach(lcell, prepared)
	{
		RecPrepared *p = lfirst(lcell);
		RecDecision d = rec_decide(&p->id, live, nlive);
		UserMapping *pum;
		DtxConn    *c;
		char	   *err;
		bool		gone;

		if (!pass->resolve || d == REC_LIVE)
		{
			rec_remaining_add(srv, U64FromFullTransactionId(p->id.fxid));
			rec_report(pass, srv->name, p, d,
					   pass->resolve ? "skipped" : NULL, NULL);
			continue;
		}

		pum = rec_find_mapping(srv->serverid, p->id.userid);
		c = rec_conn(pass, server, pum ? pum : um);
		err = rec_finish(c, p->gid, d == REC_COMMIT, &gone);
		if (err)
		{
			rec_remaining_add(srv, U64FromFullTransactionId(p->id.fxid));
			rec_report(pass, srv->name, p, d, "failed", err);
			if (pass->totals)
				pass->totals->failed++;
			ereport(WARNING,
					(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
					 errmsg("pg_dtx recovery could not %s prepared transaction \"%s\" on participant \"%s\"",
							d == REC_COMMIT ? "commit" : "roll back", p->gid, srv->name),
					 errdetail("%s", err)));
			continue;
		}
		rec_report(pass, srv->name, p, d,
				   gone ? "already resolved" :
				   d == REC_COMMIT ? "committed" : "rolled back", NULL);
		if (!gone)
		{
			dtx_count(d == REC_COMMIT ? DTX_COUNT_RECOVERED_COMMIT : DTX_COUNT_RECOVERED_ABORT);
			if (pass->totals)
			{
				if (d == REC_COMMIT)
					pass->totals->committed++;
				else
					pass->totals->rolled_back++;
			}
			ereport(LOG,
					(errmsg("pg_dtx recovery %s prepared transaction \"%s\" on participant \"%s\"",
							d == REC_COMMIT ? "committed" : "rolled back", p->gid, srv->name)));
		}
	}
	srv->listed = true;
}

/*
 * rec_server_safely runs rec_server in a subtransaction; an error is
 * reported (WARNING, and a report row) and the participant marked not
 * listed.
 */
typedef struct RecServerCall
{
	RecPass    *pass;
	RecServer  *srv;
} RecServerCall;

static void
rec_server_call(void *arg)
{
	RecServerCall *call = arg;

	rec_server(call->pass, call->srv);
}

static void
rec_server_safely(RecPass *pass, RecServer *srv)
{
	RecServerCall call = {pass, srv};
	ErrorData  *edata = dtx_try(rec_server_call, &call);
	int			i;

	if (edata == NULL)
		return;

	/* connections to this server may be mid-command: drop them */
	for (i = 0; i < pass->nconns; i++)
		if (pass->conns[i]->key.serverid == srv->serverid)
			dtx_conn_disconnect(pass->conns[i]);
	srv->listed = false;
	if (pass->totals)
		pass->totals->servers_failed++;
	rec_report(pass, srv->name, NULL, -1, pass->resolve ? "failed" : NULL,
			   edata->detail
			   ? psprintf("%s: %s", edata->message, edata->detail)
			   : edata->message);
	if (pass->resolve)
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("pg_dtx recovery could not reach participant \"%s\": %s",
						srv->name, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0));
	FreeErrorData(edata);
}

/*
 * Backoff for participants that cannot be reached, used by the worker:
 * after k failures in a row, the next attempt waits
 * min(dtx.recovery_interval * 2^k, 5 min).
 */
typedef struct RecBackoff
{
	Oid			serverid;
	int			failures;
	TimestampTz next_attempt;
} RecBackoff;

static RecBackoff rec_backoffs[64];
static int	rec_nbackoffs = 0;

static RecBackoff *
rec_backoff_find(Oid serverid, bool create)
{
	int			i;

	for (i = 0; i < rec_nbackoffs; i++)
		if (rec_backoffs[i].serverid == serverid)
			return &rec_backoffs[i];
	if (!create || rec_nbackoffs == lengthof(rec_backoffs))
		return NULL;
	rec_backoffs[rec_nbackoffs].serverid = serverid;
	rec_backoffs[rec_nbackoffs].failures = 0;
	rec_backoffs[rec_nbackoffs].next_attempt = 0;
	return &rec_backoffs[rec_nbackoffs++];
}

static bool
rec_backoff_skip(Oid serverid)
{
	RecBackoff *b = rec_backoff_find(serverid, false);

	return b != NULL && b->failures > 0 && GetCurrentTimestamp() < b->next_attempt;
}

static void
rec_backoff_result(Oid serverid, bool ok)
{
	RecBackoff *b = rec_backoff_find(serverid, true);
	int64		wait_ms;

	if (b == NULL)
		return;
	if (ok)
	{
		b->failures = 0;
		return;
	}
	b->failures++;
	wait_ms = (int64) dtx_recovery_interval * 1000 << Min(b->failures, 10);
	wait_ms = Min(wait_ms, 300000);
	b->next_attempt = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
}

/*
 * rec_servers returns the participants to scan: serverid alone, or every
 * server of the pg_dtx and postgres_fdw wrappers.
 */
static RecServer *
rec_servers(Oid serverid, int *n)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	RecServer  *out;
	int			count = 0,
				max = 8;
	Oid			dtx_fdw = InvalidOid,
				pg_fdw = InvalidOid;
	ForeignDataWrapper *fdw;

	out = palloc0(sizeof(RecServer) * max);
	if (OidIsValid(serverid))
	{
		out[0].serverid = serverid;
		out[0].name = pstrdup(GetForeignServer(serverid)->servername);
		*n = 1;
		return out;
	}
	fdw = GetForeignDataWrapperByName("pg_dtx", true);
	if (fdw)
		dtx_fdw = fdw->fdwid;
	fdw = GetForeignDataWrapperByName("postgres_fdw", true);
	if (fdw)
		pg_fdw = fdw->fdwid;

	rel = table_open(ForeignServerRelationId, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_foreign_server s = (Form_pg_foreign_server) GETSTRUCT(tup);

		if (s->srvfdw != dtx_fdw && s->srvfdw != pg_fdw)
			continue;
		if (count == max)
		{
			max *= 2;
			out = repalloc(out, sizeof(RecServer) * max);
		}
		memset(&out[count], 0, sizeof(RecServer));
		out[count].serverid = s->oid;
		out[count].name = pstrdup(NameStr(s->srvname));
		count++;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	*n = count;
	return out;
}

/* Decision rows read at the start of a pass */
typedef struct RecCandidate
{
	ItemPointerData tid;
	uint64		fxid;
	Oid		   *servers;
	int			nservers;
} RecCandidate;

static RecCandidate *
rec_read_candidates(int *n)
{
	Relation	rel = table_open(rec_decisions_relid(), AccessShareLock);
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, snap, 0, NULL);
	HeapTuple	tup;
	RecCandidate *out = palloc(sizeof(RecCandidate) * 64);
	int			count = 0,
				max = 64;

	while (count < REC_DELETE_BATCH &&
		   HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d;
		ArrayType  *arr;

		if (count == max)
		{
			max *= 2;
			out = repalloc(out, sizeof(RecCandidate) * max);
		}
		out[count].tid = tup->t_self;
		d = heap_getattr(tup, 1, RelationGetDescr(rel), &isnull);
		out[count].fxid = U64FromFullTransactionId(DatumGetFullTransactionId(d));
		d = heap_getattr(tup, 3, RelationGetDescr(rel), &isnull);
		arr = DatumGetArrayTypePCopy(d);
		out[count].nservers = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
		out[count].servers = (Oid *) ARR_DATA_PTR(arr);
		count++;
	}
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	*n = count;
	return out;
}

/*
 * rec_delete_finished deletes the candidates whose transaction is over
 * everywhere (see the file header for why this is safe).
 */
static int
rec_delete_finished(RecCandidate *cand, int ncand, uint64 *live, int nlive,
					RecServer *servers, int nservers)
{
	Relation	rel;
	int			deleted = 0;
	int			i,
				j,
				k;

	if (ncand == 0)
		return 0;
	rel = table_open(rec_decisions_relid(), RowExclusiveLock);
	for (i = 0; i < ncand; i++)
	{
		bool		keep = dtx_registry_contains(live, nlive, cand[i].fxid);

		for (j = 0; !keep && j < cand[i].nservers; j++)
		{
			RecServer  *srv = NULL;

			for (k = 0; k < nservers; k++)
				if (servers[k].serverid == cand[i].servers[j])
					srv = &servers[k];
			if (srv == NULL)
			{
				/* not scanned: keep, unless the server was dropped */
				if (GetForeignServerExtended(cand[i].servers[j], FSV_MISSING_OK) != NULL)
					keep = true;
				continue;
			}
			if (!srv->listed ||
				dtx_registry_contains(srv->remaining, srv->nremaining, cand[i].fxid))
				keep = true;
		}
		if (keep)
			continue;
		simple_heap_delete(rel, &cand[i].tid);
		deleted++;
	}
	table_close(rel, RowExclusiveLock);
	if (deleted > 0)
		CommandCounterIncrement();
	return deleted;
}

/*
 * dtx_recovery_pass resolves (or, without resolve, only reports) the
 * in-doubt transactions of this database on serverid, or on every
 * participant.  Runs in the caller's transaction.  ts/td receive report
 * rows; totals, if given, are added to.
 */
void
dtx_recovery_pass(Oid serverid, bool resolve, Tuplestorestate *ts,
				  TupleDesc td, DtxRecoveryTotals *totals, bool backoff)
{
	RecPass		pass;
	RecServer  *servers;
	int			nservers;
	RecCandidate *cand = NULL;
	int			ncand = 0;
	uint64	   *live = NULL;
	int			nlive = 0;
	int			i;

	memset(&pass, 0, sizeof(pass));
	pass.resolve = resolve;
	pass.ts = ts;
	pass.td = td;
	pass.totals = totals;
	pass.maxconns = 4;
	pass.conns = palloc(sizeof(DtxConn *) * pass.maxconns);

	if (resolve)
	{
		/* one resolving pass at a time in this database */
		LockRelationOid(rec_decisions_relid(), ShareUpdateExclusiveLock);
		cand = rec_read_candidates(&ncand);
		live = dtx_registry_snapshot(MyDatabaseId, &nlive);
	}
	servers = rec_servers(serverid, &nservers);

	PG_TRY();
	{
		for (i = 0; i < nservers; i++)
		{
			if (backoff && rec_backoff_skip(servers[i].serverid))
				continue;		/* not listed: its rows are kept */
			rec_server_safely(&pass, &servers[i]);
			if (backoff)
				rec_backoff_result(servers[i].serverid, servers[i].listed);
		}
	}
	PG_FINALLY();
	{
		rec_close_all(&pass);
	}
	PG_END_TRY();

	if (resolve)
	{
		int			deleted = rec_delete_finished(cand, ncand, live, nlive,
												  servers, nservers);

		for (i = 0; i < deleted; i++)
			dtx_count(DTX_COUNT_DECISIONS_DELETED);
		if (totals)
			totals->deleted += deleted;
	}
}

/* ----------------------------------------------------------------
 * SQL functions
 * ----------------------------------------------------------------
 */

/*
 * dtx.in_doubt_list() backs the dtx.in_doubt view: every prepared
 * transaction of this database on every participant, with the decision
 * recovery would apply; a row with a NULL gid and an error for a
 * participant that cannot be listed.
 */
Datum
dtx_in_doubt_list(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	dtx_recovery_pass(InvalidOid, false, rsinfo->setResult, rsinfo->setDesc, NULL, false);
	return (Datum) 0;
}

/*
 * dtx.recover(server name default null): resolve now; one row per prepared
 * transaction handled (or participant that could not be reached).
 */
Datum
dtx_recover(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			serverid = InvalidOid;

	if (!PG_ARGISNULL(0))
		serverid = dtx_get_participant(NameStr(*PG_GETARG_NAME(0)))->serverid;
	InitMaterializedSRF(fcinfo, 0);
	dtx_recovery_pass(serverid, true, rsinfo->setResult, rsinfo->setDesc, NULL, false);
	return (Datum) 0;
}

/*
 * xa_open connects (temporarily) to a participant with the caller's user
 * mapping.
 */
static void
xa_open(DtxConn *c, const char *servername)
{
	ForeignServer *server = dtx_get_participant(servername);
	UserMapping *um = GetUserMapping(GetUserId(), server->serverid);

	memset(c, 0, sizeof(DtxConn));
	dtx_conn_open_temp(c, server, um);
}

/*
 * dtx.xa_recover(server): every prepared transaction in the participant's
 * database, whether it is ours, and for ours the recorded decision.
 */
Datum
dtx_xa_recover(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DtxConn		c;
	List	   *prepared = NIL;
	ListCell   *lc;
	uint64	   *live;
	int			nlive;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("server must not be null")));
	InitMaterializedSRF(fcinfo, 0);
	xa_open(&c, NameStr(*PG_GETARG_NAME(0)));
	PG_TRY();
	{
		prepared = rec_list(&c, false);
	}
	PG_FINALLY();
	{
		dtx_conn_disconnect(&c);
	}
	PG_END_TRY();

	live = dtx_registry_snapshot(MyDatabaseId, &nlive);
	foreach(lc, prepared)
	{
		RecPrepared *p = lfirst(lc);
		Datum		values[6];
		bool		nulls[6] = {false};

		values[0] = CStringGetTextDatum(p->gid);
		values[1] = TimestampTzGetDatum(p->prepared);
		values[2] = CStringGetTextDatum(p->owner);
		values[3] = BoolGetDatum(p->ours);
		if (p->ours)
		{
			values[4] = FullTransactionIdGetDatum(p->id.fxid);
			values[5] = CStringGetTextDatum(rec_decision_names[rec_decide(&p->id, live, nlive)]);
		}
		else
			nulls[4] = nulls[5] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * xa_resolve: manual COMMIT/ROLLBACK PREPARED of one GID.  Refuses a GID
 * that another coordinator or database owns, a transaction still live, and
 * (unless force) a resolution that contradicts the recorded decision.
 * Every manual resolution is logged.
 */
static Datum
xa_resolve(FunctionCallInfo fcinfo, bool commit)
{
	const char *servername;
	char	   *gid;
	bool		force;
	DtxGid		id;
	RecDecision d;
	uint64	   *live;
	int			nlive;
	DtxConn		c;
	char	   *err = NULL;
	bool		gone = false;
	const char *verb = commit ? "commit" : "roll back";

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("server and gid must not be null")));
	servername = NameStr(*PG_GETARG_NAME(0));
	gid = text_to_cstring(PG_GETARG_TEXT_PP(1));
	force = !PG_ARGISNULL(2) && PG_GETARG_BOOL(2);
	(void) dtx_get_participant(servername); /* exists, and we may use it */

	if (!dtx_gid_is_ours(gid, &id))
		ereport(ERROR,
				(errcode(ERRCODE_DTX_NOT_OUR_TRANSACTION),
				 errmsg("prepared transaction \"%s\" does not belong to this database's pg_dtx coordinator",
						gid),
				 errdetail("Its GID does not start with \"%s\".", dtx_gid_prefix(MyDatabaseId)),
				 errhint("Resolve it from the coordinator database that created it, or with COMMIT PREPARED / ROLLBACK PREPARED on the participant.")));

	live = dtx_registry_snapshot(MyDatabaseId, &nlive);
	d = rec_decide(&id, live, nlive);
	if (d == REC_LIVE)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("global transaction " UINT64_FORMAT " is still in progress",
						U64FromFullTransactionId(id.fxid)),
				 errhint("Its coordinator backend will finish it; wait and retry.")));
	if ((d == REC_COMMIT && !commit) || (d == REC_ABORT && commit))
	{
		if (!force)
			ereport(ERROR,
					(errcode(ERRCODE_DTX_DECISION_CONFLICT),
					 errmsg("cannot %s prepared transaction \"%s\": the recorded decision is %s",
							verb, gid, rec_decision_names[d]),
					 errdetail("%s", d == REC_COMMIT
							   ? "The coordinator committed this global transaction; rolling back one participant would break atomicity."
							   : "The coordinator did not commit this global transaction (no decision row); committing one participant would break atomicity."),
					 errhint("Pass force => true to override, knowing the participants will disagree.")));
		ereport(WARNING,
				(errcode(ERRCODE_DTX_DECISION_CONFLICT),
				 errmsg("forced to %s prepared transaction \"%s\" against the recorded decision (%s)",
						verb, gid, rec_decision_names[d])));
	}

	xa_open(&c, servername);
	PG_TRY();
	{
		err = rec_finish(&c, gid, commit, &gone);
	}
	PG_FINALLY();
	{
		dtx_conn_disconnect(&c);
	}
	PG_END_TRY();
	if (err)
		ereport(ERROR,
				(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
				 errmsg("could not %s prepared transaction \"%s\" on participant \"%s\"",
						verb, gid, servername),
				 errdetail("%s", err)));
	if (gone)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("prepared transaction \"%s\" does not exist on participant \"%s\"",
						gid, servername)));
	ereport(LOG,
			(errmsg("pg_dtx: %s manually %s prepared transaction \"%s\" on participant \"%s\"%s",
					GetUserNameFromId(GetUserId(), false),
					commit ? "committed" : "rolled back", gid, servername,
					((d == REC_COMMIT) != commit) ? " against the recorded decision" : "")));
	PG_RETURN_TEXT_P(cstring_to_text(commit ? "committed" : "rolled back"));
}

Datum
dtx_xa_commit(PG_FUNCTION_ARGS)
{
	return xa_resolve(fcinfo, true);
}

Datum
dtx_xa_rollback(PG_FUNCTION_ARGS)
{
	return xa_resolve(fcinfo, false);
}

/*
 * dtx.stats(): the cluster-wide counters since the last restart.
 */
Datum
dtx_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	td;
	Datum		values[DTX_NCOUNTERS];
	bool		nulls[DTX_NCOUNTERS] = {false};
	int			i;

	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	for (i = 0; i < DTX_NCOUNTERS; i++)
		values[i] = Int64GetDatum((int64) pg_atomic_read_u64(&dtx_shared->counters[i]));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(td), values, nulls)));
}

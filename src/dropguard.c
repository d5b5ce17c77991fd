/*-------------------------------------------------------------------------
 *
 * dropguard.c
 *	  A participant with unresolved global transactions cannot be dropped.
 *
 * A global transaction that prepared on a server keeps a decision row in
 * dtx.decisions (fxid, incarnation, the writing servers' oids) until
 * recovery has seen that no participant still holds one of its GIDs.
 * Dropping such a server would orphan its prepared transactions: recovery
 * no longer lists it, dtx.in_doubt no longer shows it, the participant
 * keeps the transaction and its locks forever, and the decision row is
 * then deleted, so a server created again under the same name would see
 * the GID as presumed aborted.
 *
 * So an object access hook refuses the drop of a foreign server (OAT_DROP:
 * DROP SERVER, and every cascade that reaches one: DROP FOREIGN DATA
 * WRAPPER ... CASCADE, DROP OWNED, DROP EXTENSION postgres_fdw CASCADE)
 * while a decision row names it: ERROR 55006 with a hint naming
 * dtx.recover and the xa_* functions.  The same hook refuses the drop of
 * dtx.decisions itself while it holds a row: DROP EXTENSION pg_dtx
 * (CASCADE) drops that table before the servers of its wrapper, and would
 * otherwise orphan every participant's prepared transactions at once.  The check is local (no connection to
 * the participant): a decision row stays until recovery has confirmed the
 * transaction finished on every participant, so the drop succeeds once
 * dtx.recover() has run with every participant reachable.
 *
 * The race with a coordinator that is committing is closed by a lock: at
 * pre-commit, before its decision row is inserted, the coordinator takes
 * AccessShareLock on each writing server (dtx_dropguard_lock_server), and
 * DROP takes AccessExclusiveLock on every server it deletes before the
 * hook runs.  A DROP that comes second waits for the commit and then sees
 * the row (the hook reads the latest snapshot); a coordinator that comes
 * second waits for the DROP and fails if the server is gone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "catalog/pg_foreign_server.h"
#include "commands/extension.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "dropguard.h"

static object_access_hook_type dropguard_prev_hook = NULL;

/*
 * dropguard_decisions_relid: dtx.decisions of the pg_dtx extension in this
 * database, or InvalidOid (no extension here, or it is being dropped and
 * the table already went: its decisions go with it).
 */
static Oid
dropguard_decisions_relid(void)
{
	Oid			extoid = get_extension_oid("pg_dtx", true);
	Oid			nsp;
	Oid			relid;

	if (!OidIsValid(extoid))
		return InvalidOid;
	nsp = get_namespace_oid("dtx", true);
	if (!OidIsValid(nsp))
		return InvalidOid;
	relid = get_relname_relid("decisions", nsp);
	if (!OidIsValid(relid) ||
		getExtensionOfObject(RelationRelationId, relid) != extoid)
		return InvalidOid;
	return relid;
}

/*
 * dropguard_check_server ERRORs (55006) if a decision row names serverid.
 * Reads dtx.decisions with the latest snapshot, so that a decision
 * committed while DROP waited for the server's lock is seen.
 */
static void
dropguard_check_server(Oid serverid)
{
	Oid			relid = dropguard_decisions_relid();
	Relation	rel;
	Snapshot	snap;
	SysScanDesc scan;
	HeapTuple	tup;
	int			count = 0;
	TimestampTz oldest = 0;
	ForeignServer *server;

	if (!OidIsValid(relid))
		return;
	rel = table_open(relid, AccessShareLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan(rel, InvalidOid, false, snap, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, 3, RelationGetDescr(rel), &isnull);
		ArrayType  *arr;
		Oid		   *oids;
		int			n;
		int			i;

		if (isnull)
			continue;
		arr = DatumGetArrayTypeP(d);
		if (ARR_NDIM(arr) != 1 || ARR_HASNULL(arr) || ARR_ELEMTYPE(arr) != OIDOID)
			continue;
		n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
		oids = (Oid *) ARR_DATA_PTR(arr);
		for (i = 0; i < n; i++)
		{
			if (oids[i] != serverid)
				continue;
			d = heap_getattr(tup, 4, RelationGetDescr(rel), &isnull);
			if (!isnull && (count == 0 || DatumGetTimestampTz(d) < oldest))
				oldest = DatumGetTimestampTz(d);
			count++;
			break;
		}
	}
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);

	if (count == 0)
		return;
	server = GetForeignServer(serverid);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_IN_USE),
			 errmsg("cannot drop server \"%s\" because pg_dtx has unresolved global transactions on it",
					server->servername),
			 errdetail_plural("%d global transaction that prepared on server \"%s\" has a decision that recovery has not yet confirmed finished on every participant (decided at %s).",
							  "%d global transactions that prepared on server \"%s\" have a decision that recovery has not yet confirmed finished on every participant (the oldest decided at %s).",
							  count, count, server->servername, timestamptz_to_str(oldest)),
			 errhint("Resolve them first: SELECT * FROM dtx.recover(); finishes them and forgets their decisions once every participant is reachable; dtx.in_doubt lists them, and dtx.xa_recover, dtx.xa_commit and dtx.xa_rollback resolve one by hand.")));
}

/*
 * dropguard_check_decisions ERRORs (55006) if relid is dtx.decisions and it
 * holds a decision.  DROP EXTENSION pg_dtx drops the table before the
 * servers of its wrapper (so their check finds no table): this is the
 * check that stops it.  Cheap for every other relation: one syscache
 * lookup of its namespace.
 */
static void
dropguard_check_decisions(Oid relid)
{
	Oid			nsp = get_namespace_oid("dtx", true);
	Relation	rel;
	Snapshot	snap;
	SysScanDesc scan;
	HeapTuple	tup;
	int			count = 0;

	if (!OidIsValid(nsp) || get_rel_namespace(relid) != nsp ||
		relid != dropguard_decisions_relid())
		return;
	rel = table_open(relid, AccessShareLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan(rel, InvalidOid, false, snap, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
		count++;
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	if (count == 0)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_IN_USE),
			 errmsg("cannot drop table dtx.decisions because pg_dtx has unresolved global transactions"),
			 errdetail_plural("%d decision has not yet been confirmed finished on every participant; without it, their prepared transactions would be orphaned.",
							  "%d decisions have not yet been confirmed finished on every participant; without them, their prepared transactions would be orphaned.",
							  count, count),
			 errhint("Resolve them first (DROP EXTENSION pg_dtx drops this table): SELECT * FROM dtx.recover(); finishes them and forgets their decisions once every participant is reachable; dtx.in_doubt lists them, and dtx.xa_recover, dtx.xa_commit and dtx.xa_rollback resolve one by hand.")));
}

static void
dropguard_object_access(ObjectAccessType access, Oid classId, Oid objectId,
						int subId, void *arg)
{
	if (dropguard_prev_hook)
		dropguard_prev_hook(access, classId, objectId, subId, arg);
	if (access != OAT_DROP)
		return;
	if (classId == ForeignServerRelationId)
		dropguard_check_server(objectId);
	else if (classId == RelationRelationId && subId == 0)
		dropguard_check_decisions(objectId);
}

/* _PG_init: install the hook */
void
dtx_dropguard_init(void)
{
	dropguard_prev_hook = object_access_hook;
	object_access_hook = dropguard_object_access;
}

/*
 * dtx_dropguard_lock_server takes AccessShareLock on the foreign server
 * (the lock DROP's AccessExclusiveLock conflicts with), held to the end of
 * the transaction, and ERRORs (42704) if the server was dropped before the
 * lock was granted.  The wait is the lock manager's: interruptible, and
 * seen by the deadlock detector.
 */
void
dtx_dropguard_lock_server(Oid serverid, const char *servername)
{
	/* LockDatabaseObject accepts invalidations once the lock is granted */
	LockDatabaseObject(ForeignServerRelationId, serverid, 0, AccessShareLock);
	if (!SearchSysCacheExists1(FOREIGNSERVEROID, ObjectIdGetDatum(serverid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("server \"%s\" was dropped while this transaction used it",
						servername),
				 errdetail("Nothing was prepared; the transaction is rolled back.")));
}

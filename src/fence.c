/*-------------------------------------------------------------------------
 *
 * fence.c
 *	  Fenced tables: a BEFORE ROW trigger, dtx.fence_check, that rejects
 *	  writes carrying a stale fencing token.
 *
 * dtx.fence_table() installs the trigger with four arguments: the rule
 * ('monotonic' or 'holder'), the token column, the resource column ('' for
 * none) and the resource used when there is no resource column.
 *
 * The token of a write is dtx.fencing_token when set (SET LOCAL works
 * through transaction-mode poolers; it is then also stored in the token
 * column), else the row's token column.  An UPDATE that sets neither would
 * silently reuse the token of the row's last writer, so it is refused, as
 * is a DELETE without dtx.fencing_token.
 *
 * Rule 'monotonic': the highest token accepted per (table, resource) is
 * kept in dtx.fence_marks.  A lower token is rejected.  A higher token
 * raises the mark inside the writing transaction, so a write that aborts
 * leaves the mark where it was.  Ordering: a write with a token equal to
 * the mark takes a share lock on (table, resource) and one that raises it
 * an exclusive lock, both held to the end of the transaction (heavyweight
 * locks of the lock manager, tag advisory with field4 = 0x4458).  So writers
 * with the same token never block each other; a raise waits for writers
 * with the old token to finish, and a writer that arrives after the raise
 * waits for it, then sees the new mark and is rejected.  Once a write with
 * token n has committed, no write with a lower token commits.
 *
 * Rule 'holder': the token must be the current token of the lease named by
 * the resource, and that lease must not have expired.  Stricter, but only
 * as good as the judgement at the time of the write: a holder that expires
 * between its check and its commit still commits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/syscache.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "fence.h"
#include "lease.h"
#include "pg_dtx.h"

#define FENCE_LOCK_FIELD4	0x4458	/* "DX": our advisory lock space */
#define FENCE_CACHE_KEY		256		/* longer resources are not cached */

char	   *dtx_fencing_token = NULL;

/*
 * What this transaction already checked: (table, resource) → token and
 * the lock mode it holds.  Reset at the end of the transaction and when a
 * subtransaction aborts (its locks and mark writes went with it).
 */
typedef struct FenceSeenKey
{
	Oid			relid;
	uint16		len;
	char		resource[FENCE_CACHE_KEY];
} FenceSeenKey;

typedef struct FenceSeen
{
	FenceSeenKey key;
	int64		token;
	LOCKMODE	mode;
} FenceSeen;

static HTAB *fence_seen = NULL;	/* in TopMemoryContext, emptied at xact end */
static bool fence_seen_dirty = false;

/* dtx.fence_marks and its primary key; reset by any change to pg_class */
static Oid	marks_relid = InvalidOid;
static Oid	marks_index = InvalidOid;
static bool marks_callback = false;

/* the last partition seen and the root of its tree; reset likewise */
static Oid	last_partition = InvalidOid;
static Oid	last_root = InvalidOid;

static void
fence_marks_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	marks_relid = InvalidOid;
	marks_index = InvalidOid;
	last_partition = InvalidOid;
}

/*
 * dtx_fence_xact_reset forgets the checks of the transaction (at its end,
 * or when a subtransaction aborts: its locks and mark writes are gone).
 */
void
dtx_fence_xact_reset(void)
{
	HASH_SEQ_STATUS scan;
	FenceSeen  *e;

	if (!fence_seen_dirty)
		return;
	fence_seen_dirty = false;
	if (hash_get_num_entries(fence_seen) > 1024)
	{
		hash_destroy(fence_seen);
		fence_seen = NULL;
		return;
	}
	hash_seq_init(&scan, fence_seen);
	while ((e = hash_seq_search(&scan)) != NULL)
		(void) hash_search(fence_seen, &e->key, HASH_REMOVE, NULL);
}

/*
 * dtx.fencing_token is read as int8 input is: white space is allowed on
 * both sides of an optional sign and decimal digits.  The check hook
 * refuses anything else; the assign hook keeps the number in
 * fence_token_value for the trigger (0: not set).
 */
static int64 fence_token_value = 0;

/* the token in s: > 0; 0 if s is empty or blank; -1 if not a valid token */
static int64
fence_parse_token(const char *s)
{
	int64		v;
	char	   *end;

	if (s == NULL)
		return 0;
	while (isspace((unsigned char) *s))
		s++;
	if (*s == '\0')
		return 0;
	errno = 0;
	v = strtoi64(s, &end, 10);
	if (end == s || errno != 0)
		return -1;
	while (isspace((unsigned char) *end))
		end++;
	if (*end != '\0' || v <= 0)
		return -1;
	return v;
}

static bool
check_fencing_token(char **newval, void **extra, GucSource source)
{
	if (fence_parse_token(*newval) < 0)
	{
		GUC_check_errdetail("dtx.fencing_token must be a positive bigint, or empty.");
		return false;
	}
	return true;
}

static void
assign_fencing_token(const char *newval, void *extra)
{
	fence_token_value = fence_parse_token(newval);
}

void
dtx_fence_define_gucs(void)
{
	DefineCustomStringVariable("dtx.fencing_token",
							   "Fencing token of the writes to fenced tables in this session or transaction.",
							   "Set it with SET LOCAL inside the transaction (works through transaction-mode poolers). Empty: the token comes from the row's token column.",
							   &dtx_fencing_token,
							   "",
							   PGC_USERSET, 0,
							   check_fencing_token, assign_fencing_token, NULL);
}

/* the OIDs of dtx.fence_marks and its primary key, into locals */
static void
fence_lookup_marks(Oid *relid, Oid *index)
{
	if (!OidIsValid(marks_relid) || !OidIsValid(marks_index))
	{
		Oid			nsp;
		Oid			r;
		Oid			i;

		if (!marks_callback)
		{
			CacheRegisterSyscacheCallback(RELOID, fence_marks_invalidate, (Datum) 0);
			marks_callback = true;
		}
		nsp = get_namespace_oid("dtx", false);
		r = get_relname_relid("fence_marks", nsp);
		i = get_relname_relid("fence_marks_pkey", nsp);
		if (!OidIsValid(r) || !OidIsValid(i))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("table dtx.fence_marks or its primary key does not exist"),
					 errhint("Reinstall the extension pg_dtx.")));
		marks_relid = r;
		marks_index = i;
		*relid = r;
		*index = i;
		return;
	}
	/* the invalidation callback may reset the statics at any catalog access */
	*relid = marks_relid;
	*index = marks_index;
}

/*
 * fence_read_mark returns the mark of (relid, resource) as of now (latest
 * committed, plus this transaction's own), or 0; *tuple gets a copy of the
 * row when there is one.
 */
static int64
fence_read_mark(Relation marks, Oid index, Oid relid, text *resource,
				HeapTuple *tuple)
{
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;
	int64		mark = 0;

	ScanKeyInit(&key[0], 1, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	ScanKeyInit(&key[1], 2, BTEqualStrategyNumber, F_TEXTEQ,
				PointerGetDatum(resource));
	scan = systable_beginscan(marks, index, true, SnapshotSelf, 2, key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;

		mark = DatumGetInt64(heap_getattr(tup, 3, RelationGetDescr(marks),
										  &isnull));
		if (tuple)
			*tuple = heap_copytuple(tup);
	}
	else if (tuple)
		*tuple = NULL;
	systable_endscan(scan);
	return mark;
}

static void
fence_write_mark(Relation marks, Oid relid, text *resource, int64 token,
				 HeapTuple old)
{
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	HeapTuple	tup;

	values[0] = ObjectIdGetDatum(relid);
	values[1] = PointerGetDatum(resource);
	values[2] = Int64GetDatum(token);
	values[3] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	if (old == NULL)
	{
		tup = heap_form_tuple(RelationGetDescr(marks), values, nulls);
		CatalogTupleInsert(marks, tup);
	}
	else
	{
		bool		replace[4] = {false, false, true, true};

		tup = heap_modify_tuple(old, RelationGetDescr(marks), values, nulls,
								replace);
		CatalogTupleUpdate(marks, &old->t_self, tup);
	}
	CommandCounterIncrement();
}

static void
stale_token(Relation rel, const char *resource, int64 token, int64 mark)
{
	ereport(ERROR,
			(errcode(ERRCODE_DTX_STALE_FENCING_TOKEN),
			 errmsg("fencing token " INT64_FORMAT " is stale for resource \"%s\" of table %s: token " INT64_FORMAT " has been used",
					token, resource, RelationGetRelationName(rel), mark),
			 errdetail("Writes with tokens lower than " INT64_FORMAT " are rejected: a newer lease holder has written.",
					   mark)));
}

/*
 * The table whose marks a write checks: the fenced table.  For a partition
 * whose trigger was cloned from a fenced ancestor, that ancestor (the
 * nearest one with a dtx_fence trigger of its own), so that all partitions
 * share one high-water mark per resource.
 */
static bool
has_own_fence_trigger(Oid relid)
{
	Relation	tgrel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	ScanKeyInit(&key[0], Anum_pg_trigger_tgrelid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	ScanKeyInit(&key[1], Anum_pg_trigger_tgname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("dtx_fence"));
	scan = systable_beginscan(tgrel, TriggerRelidNameIndexId, true, NULL, 2, key);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
		found = !OidIsValid(((Form_pg_trigger) GETSTRUCT(tup))->tgparentid);
	systable_endscan(scan);
	table_close(tgrel, AccessShareLock);
	return found;
}

static Oid
fence_mark_relid(Relation rel, Trigger *trigger)
{
	List	   *ancestors;
	ListCell   *lc;
	Oid			owner;

	if (!trigger->tgisclone)
		return RelationGetRelid(rel);
	if (RelationGetRelid(rel) == last_partition)
		return last_root;
	ancestors = get_partition_ancestors(RelationGetRelid(rel));
	owner = llast_oid(ancestors);
	foreach(lc, ancestors)
	{
		if (has_own_fence_trigger(lfirst_oid(lc)))
		{
			owner = lfirst_oid(lc);
			break;
		}
	}
	list_free(ancestors);
	last_partition = RelationGetRelid(rel);
	last_root = owner;
	return owner;
}

/*
 * fence_monotonic: rule 'monotonic' for one resource.  The common case, a
 * token equal to the mark, costs one share lock and one index probe; a
 * raise trades the share lock for an exclusive one (released first, so
 * that two raisers do not deadlock on an upgrade) and reads again.
 */
static void
fence_monotonic(Relation rel, Oid relid, const char *resource, int64 token)
{
	int			len = strlen(resource);
	FenceSeen  *seen = NULL;
	LOCKMODE	held = NoLock;
	Relation	marks;
	Oid			marks_oid;
	Oid			index_oid;
	text	   *res;
	uint64		h;
	LOCKTAG		tag;
	HeapTuple	old;
	int64		mark;

	if (len < FENCE_CACHE_KEY)
	{
		FenceSeenKey key;
		bool		found;

		if (fence_seen == NULL)
		{
			HASHCTL		info;

			info.keysize = sizeof(FenceSeenKey);
			info.entrysize = sizeof(FenceSeen);
			info.hcxt = TopMemoryContext;
			fence_seen = hash_create("pg_dtx fence checks", 16, &info,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		}
		memset(&key, 0, sizeof(key));	/* hashed whole, padding too */
		key.relid = relid;
		key.len = len;
		memcpy(key.resource, resource, len);
		seen = hash_search(fence_seen, &key, HASH_ENTER, &found);
		fence_seen_dirty = true;
		if (!found)
		{
			seen->token = 0;
			seen->mode = NoLock;
		}
		else if (seen->token == token)
			return;				/* checked, and the lock is held */
		else if (token < seen->token)
			stale_token(rel, resource, token, seen->token);
		held = seen->mode;
	}

	h = hash_bytes_extended((const unsigned char *) resource, len, relid);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 FENCE_LOCK_FIELD4);
	res = cstring_to_text_with_len(resource, len);
	fence_lookup_marks(&marks_oid, &index_oid);
	marks = table_open(marks_oid, RowExclusiveLock);

	if (held == NoLock)
	{
		(void) LockAcquire(&tag, ShareLock, false, false);
		held = ShareLock;
	}
	mark = fence_read_mark(marks, index_oid, relid, res, &old);
	if (token > mark && held != ExclusiveLock)
	{
		/* a raise: wait for the writers of the old token to finish */
		if (seen == NULL || seen->mode == NoLock)
			LockRelease(&tag, ShareLock, false);
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
		held = ExclusiveLock;
		if (old)
			heap_freetuple(old);
		mark = fence_read_mark(marks, index_oid, relid, res, &old);
	}
	if (seen)
		seen->mode = held;
	if (token < mark)
		stale_token(rel, resource, token, mark);
	if (token > mark)
		fence_write_mark(marks, relid, res, token, old);
	table_close(marks, RowExclusiveLock);
	if (seen)
		seen->token = token;
}

/*
 * fence_holder: rule 'holder' for one resource.  The token must hold the
 * lease, and the writer must have the privileges of the role holding it,
 * as for lease_renew and lease_release (tokens are consecutive numbers and
 * readable in the fenced rows: the token alone proves nothing).
 */
static void
fence_holder(Relation rel, const char *resource, int64 token)
{
	int64		current;
	Oid			role;
	DtxLeaseCheck r = dtx_lease_check(resource, strlen(resource), token,
									  &current, &role);

	if (r == DTX_LEASE_OK)
	{
		char	   *rolename;

		if (role == GetUserId() || has_privs_of_role(GetUserId(), role))
			return;
		rolename = GetUserNameFromId(role, true);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to write to table %s with the token of lease \"%s\"",
						RelationGetRelationName(rel), resource),
				 errdetail("The lease is held by role \"%s\"; only roles with its privileges and superusers may write with its token.",
						   rolename ? rolename : "?")));
	}
	ereport(ERROR,
			(errcode(ERRCODE_DTX_STALE_FENCING_TOKEN),
			 errmsg("fencing token " INT64_FORMAT " does not hold lease \"%s\" for table %s",
					token, resource, RelationGetRelationName(rel)),
			 r == DTX_LEASE_OTHER_TOKEN ?
			 errdetail("The lease is held with token " INT64_FORMAT ".", current) :
			 r == DTX_LEASE_EXPIRED ?
			 errdetail("The lease held with token " INT64_FORMAT " has expired.", token) :
			 errdetail("Nobody holds the lease.")));
}

/* the resource of a row: its resource column as text, or the default */
static char *
fence_resource(Relation rel, HeapTuple tup, int attno, const char *dflt)
{
	Datum		d;
	bool		isnull;
	Oid			typoutput;
	bool		varlena;

	if (attno <= 0)
		return (char *) dflt;
	d = heap_getattr(tup, attno, RelationGetDescr(rel), &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("resource column \"%s\" of fenced table %s must not be null",
						NameStr(TupleDescAttr(RelationGetDescr(rel), attno - 1)->attname),
						RelationGetRelationName(rel))));
	getTypeOutputInfo(TupleDescAttr(RelationGetDescr(rel), attno - 1)->atttypid,
					  &typoutput, &varlena);
	return OidOutputFunctionCall(typoutput, d);
}

static int
fence_column(Relation rel, const char *name, const char *what)
{
	int			attno = SPI_fnumber(RelationGetDescr(rel), name);

	if (attno <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s column \"%s\" of fenced table %s does not exist",
						what, name, RelationGetRelationName(rel)),
				 errhint("Run dtx.fence_table() again, or dtx.unfence_table().")));
	return attno;
}

PG_FUNCTION_INFO_V1(dtx_fence_check);

/*
 * dtx.fence_check(): the trigger of fenced tables.
 */
Datum
dtx_fence_check(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	char	  **args;
	bool		holder_rule;
	int			tokattno;
	int			resattno = 0;
	HeapTuple	newtup = NULL;
	HeapTuple	oldtup = NULL;
	int64		token;
	char	   *res_new = NULL;
	char	   *res_old = NULL;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		td->tg_trigger->tgnargs != 4)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("dtx.fence_check() must be installed by dtx.fence_table()")));

	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	args = td->tg_trigger->tgargs;
	holder_rule = strcmp(args[0], "holder") == 0;
	tokattno = fence_column(rel, args[1], "token");
	if (TupleDescAttr(desc, tokattno - 1)->atttypid != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("token column \"%s\" of fenced table %s must be of type bigint",
						args[1], RelationGetRelationName(rel))));
	if (args[2][0] != '\0')
		resattno = fence_column(rel, args[2], "resource");

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		newtup = td->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		newtup = td->tg_newtuple;
		oldtup = td->tg_trigtuple;
	}
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		oldtup = td->tg_trigtuple;
	else
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("dtx.fence_check() fires on INSERT, UPDATE and DELETE only")));

	if (fence_token_value > 0)
	{
		token = fence_token_value;
		if (newtup)
		{
			bool		isnull;
			Datum		cur = heap_getattr(newtup, tokattno, desc, &isnull);

			if (isnull || DatumGetInt64(cur) != token)
			{
				Datum		v = Int64GetDatum(token);
				bool		n = false;

				newtup = heap_modify_tuple_by_cols(newtup, desc, 1, &tokattno,
												   &v, &n);
			}
		}
	}
	else
	{
		bool		isnull = true;

		if (newtup == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_DTX_FENCING_TOKEN_REQUIRED),
					 errmsg("DELETE from fenced table %s needs dtx.fencing_token",
							RelationGetRelationName(rel)),
					 errhint("SET LOCAL dtx.fencing_token = <your lease token> in the transaction.")));
		if (oldtup &&
			!bms_is_member(tokattno - FirstLowInvalidHeapAttributeNumber,
						   td->tg_updatedcols))
			ereport(ERROR,
					(errcode(ERRCODE_DTX_FENCING_TOKEN_REQUIRED),
					 errmsg("UPDATE of fenced table %s must set column \"%s\" or dtx.fencing_token",
							RelationGetRelationName(rel), args[1]),
					 errhint("Otherwise the row's old token would be reused.")));
		token = DatumGetInt64(heap_getattr(newtup, tokattno, desc, &isnull));
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_DTX_FENCING_TOKEN_REQUIRED),
					 errmsg("write to fenced table %s has no fencing token",
							RelationGetRelationName(rel)),
					 errhint("Set column \"%s\" to your lease token, or SET LOCAL dtx.fencing_token.",
							 args[1])));
		if (token <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("fencing token must be positive")));
	}

	if (newtup)
		res_new = fence_resource(rel, newtup, resattno, args[3]);
	if (oldtup)
	{
		res_old = fence_resource(rel, oldtup, resattno, args[3]);
		if (res_new && strcmp(res_new, res_old) == 0)
			res_old = NULL;
	}

	if (holder_rule)
	{
		if (res_new)
			fence_holder(rel, res_new, token);
		if (res_old)
			fence_holder(rel, res_old, token);
	}
	else
	{
		Oid			markrel = fence_mark_relid(rel, td->tg_trigger);

		if (res_new)
			fence_monotonic(rel, markrel, res_new, token);
		if (res_old)
			fence_monotonic(rel, markrel, res_old, token);
	}

	return PointerGetDatum(newtup ? newtup : oldtup);
}

/*-------------------------------------------------------------------------
 *
 * lease.c
 *	  Leases: named, time-limited, fenced by strictly increasing tokens.
 *
 * The lease table is a partitioned shared hash table (dtx.max_leases
 * entries, 16 partition locks) keyed by (database, name).  A name is up to
 * 255 bytes of text and compared whole: no hashing of names into 32 or 64
 * bits as advisory locks do.
 *
 * Expiry is judged on the server's monotonic clock (CLOCK_MONOTONIC), so a
 * step of the wall clock neither shortens nor stretches a lease; the wall
 * clock is only used to display acquired_at and expires_at.
 *
 * Waiters queue FIFO in the entry (a linked list through per-process waiter
 * slots indexed by pgprocno).  Only the head of the queue watches the
 * holder's expiry; the others sleep until their own deadline.  A release
 * hands the lease to the head waiter (state GRANTING) and sets its latch,
 * and nobody else's; the grantee draws its token and then wakes the new
 * head so that it watches the new expiry.  A grant that is not taken up
 * in the grantee's TTL (the grantee was frozen) lapses like an expired
 * lease.
 *
 * A lease belongs to the role that acquired it (current_user): only roles
 * with the privileges of that role (members that inherit it, superusers)
 * see its token in dtx.leases, renew or release it, or write with its token
 * to a table fenced with rule 'holder'.  The token alone is not enough: it
 * is a small, consecutive number, and fenced tables store it in their rows.
 *
 * The table is shared by all databases, so a role that is not superuser
 * may hold at most dtx.max_leases_per_role leases at once, and ask for TTLs
 * up to dtx.lease_user_max_ttl (which bounds the grace period it can cause
 * after a restart).  The leases of each role are counted in a second shared
 * hash table, changed under its own lock whenever a lease changes role
 * (lease_take_role), with a lease's partition lock held.
 *
 * Tokens come from a per-database counter.  Before a token is handed out,
 * a range that contains it has been reserved durably: the row of
 * dtx.lease_tokens is updated in place (WAL-logged, like VACUUM's updates
 * of pg_class), the WAL is flushed, and with synchronous replication the
 * synchronous standbys have confirmed it.  After a crash the counter
 * resumes past the reserved range, so no token is handed out twice, also
 * on a promoted synchronous standby.  One flush per range, not per token.
 *
 * The same row holds a horizon, a wall-clock time by which every lease
 * granted so far has expired, and the longest TTL ever granted.  After a
 * restart (or a promotion) no lease of that database is granted until
 * min(horizon, start + longest TTL): a client that held a lease when the
 * server went down may still believe it does until then.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/twophase.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "lease.h"
#include "pg_dtx.h"

#define LEASE_PARTITIONS	16	/* power of two */
#define LEASE_MAX_DBS		64	/* databases that use leases at once */
#define TOKEN_RANGE			8192	/* tokens reserved by one flush */

int			dtx_max_leases = 4096;
int			dtx_lease_max_ttl = 3600;
int			dtx_lease_user_max_ttl = 300;
int			dtx_max_leases_per_role = 1024;

typedef struct LeaseKey
{
	Oid			dboid;
	uint16		len;
	char		name[DTX_LEASE_NAME_MAX + 1];
} LeaseKey;

typedef enum LeaseState
{
	LEASE_FREE,					/* nobody holds it (entry kept for waiters) */
	LEASE_HELD,					/* held until expires_mono */
	LEASE_GRANTING				/* handed to waiter 'owner', who has until
								 * expires_mono to take it */
} LeaseState;

typedef struct Lease
{
	LeaseKey	key;
	LeaseState	state;
	int64		token;
	TimestampTz acquired_at;
	TimestampTz expires_at;
	int64		expires_mono;	/* µs on CLOCK_MONOTONIC */
	int			owner;			/* pgprocno: grantee, or session owner; -1 */
	int			owner_pid;		/* holder's pid when acquired */
	Oid			role;			/* role of the holder or grantee; InvalidOid
								 * when free */
	bool		session;		/* released when the owner's session ends */
	int			head;			/* FIFO queue of waiters (pgprocno), -1 */
	int			tail;
	int			nwaiters;
	char		holder[DTX_LEASE_HOLDER_MAX + 1];
} Lease;

typedef struct LeaseWaiter
{
	int			next;			/* next in the queue, -1 */
	bool		queued;
	int64		ttl_us;
	int64		deadline;		/* gives up then (monotonic µs) */
	bool		session;
	int			pid;
	Oid			role;			/* current_user of the waiting acquire */
	char		holder[DTX_LEASE_HOLDER_MAX + 1];
} LeaseWaiter;

/* Token counter and durable state of one database */
typedef struct LeaseDb
{
	slock_t		mutex;
	Oid			dboid;			/* InvalidOid = free slot */
	bool		reserving;		/* a backend is writing the row (mutex) */
	/*
	 * Read without the mutex on the hot path; written by the reserver only
	 * (next: drawn by compare-and-swap, under the lease's partition lock).
	 */
	volatile bool loaded;		/* read from dtx.lease_tokens */
	pg_atomic_uint64 next;		/* next token to hand out */
	pg_atomic_uint64 reserved;	/* durable: no token above this was given */
	pg_atomic_uint64 horizon;	/* durable: every lease expires by then
								 * (a TimestampTz) */
	pg_atomic_uint64 max_ttl_us;	/* durable: the longest TTL granted */
	TimestampTz grace_until;	/* no grant before (wall clock, display) */
	int64		grace_until_mono;	/* same on the monotonic clock */
	uint64		flushes;		/* reservations written by this server */
	pg_atomic_uint64 wakeups;	/* times a waiter woke up */
	XLogRecPtr	unconfirmed_lsn;	/* written, not confirmed by the
									 * synchronous standbys (reserver only) */
	ConditionVariable cv;		/* signalled when 'reserving' clears */
} LeaseDb;

/* Leases held by (or being handed to) one role, in all databases */
typedef struct LeaseRoleCount
{
	Oid			role;			/* hash key */
	int			count;			/* > 0: entries with count 0 are removed */
} LeaseRoleCount;

typedef struct LeaseShared
{
	LWLockPadded *locks;		/* LEASE_PARTITIONS partition locks, then
								 * the lock of the role counts */
	slock_t		mutex;			/* protects epoch and db slot allocation */
	TimestampTz epoch;			/* when leases could first be granted after
								 * this server (re)started or was promoted */
	pg_atomic_uint32 queued;	/* waiters in all queues */
	int			nwaiters;
	LeaseDb		dbs[LEASE_MAX_DBS];
	LeaseWaiter waiters[FLEXIBLE_ARRAY_MEMBER];
} LeaseShared;

/* The durable row, dtx.lease_tokens (all NOT NULL, fixed width) */
typedef struct FormData_lease_tokens
{
	int64		reserved;
	int64		max_ttl_us;
	TimestampTz horizon;
} FormData_lease_tokens;

static LeaseShared *ls = NULL;

#define ATOMIC_GET(a)		((int64) pg_atomic_read_u64(&(a)))
#define ATOMIC_SET(a, v)	pg_atomic_write_u64(&(a), (uint64) (v))
static HTAB *lease_htab = NULL;
static HTAB *lease_roles = NULL;	/* Oid → LeaseRoleCount, dtx_max_leases
									 * entries: never full, as each role in
									 * it holds a lease entry at least */

#define LEASE_ROLES_LOCK	(&ls->locks[LEASE_PARTITIONS].lock)	/* taken
									 * after a partition lock, never before */

/* The wait of this backend in progress, for cleanup on error or exit */
static struct
{
	bool		active;
	uint32		hash;
	LeaseKey	key;
} cur_wait;

/* Session-bound leases of this backend, released when it exits */
typedef struct SessionLease
{
	LeaseKey	key;
	int64		token;
} SessionLease;

static SessionLease *session_leases = NULL;
static int	n_session_leases = 0;
static int	max_session_leases = 0;
static bool session_exit_hook = false;

/* ------------------------------------------------------------------------
 * Settings and shared memory
 * ------------------------------------------------------------------------
 */

void
dtx_lease_define_gucs(void)
{
	DefineCustomIntVariable("dtx.max_leases",
							"Number of leases the server can hold at once (all databases).",
							"Each lease takes about 480 bytes of shared memory.",
							&dtx_max_leases,
							4096, 16, 1000000,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("dtx.lease_max_ttl",
							"Longest TTL a lease may be acquired or renewed with.",
							"It also bounds the grace period after a restart.",
							&dtx_lease_max_ttl,
							3600, 1, 365 * 86400,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("dtx.lease_user_max_ttl",
							"Longest TTL a role that is not superuser may acquire or renew a lease with.",
							"The lower of it and dtx.lease_max_ttl applies. It bounds the grace period after a restart that ordinary roles can cause.",
							&dtx_lease_user_max_ttl,
							300, 1, 365 * 86400,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("dtx.max_leases_per_role",
							"Number of leases a role that is not superuser may hold at once (all databases).",
							"-1 means no limit. Leases being handed to the role's waiters count.",
							&dtx_max_leases_per_role,
							1024, -1, 1000000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
}

static int
lease_nprocs(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

static Size
lease_shared_size(void)
{
	return add_size(offsetof(LeaseShared, waiters),
					mul_size(lease_nprocs(), sizeof(LeaseWaiter)));
}

void
dtx_lease_shmem_request(void)
{
	RequestAddinShmemSpace(add_size(add_size(lease_shared_size(),
											 hash_estimate_size(dtx_max_leases,
																sizeof(Lease))),
									hash_estimate_size(dtx_max_leases,
													   sizeof(LeaseRoleCount))));
	RequestNamedLWLockTranche("pg_dtx_leases", LEASE_PARTITIONS + 1);
}

static uint32
lease_key_hash(const void *key, Size keysize)
{
	const LeaseKey *k = key;

	return hash_bytes((const unsigned char *) k,
					  offsetof(LeaseKey, name) + k->len);
}

static int
lease_key_match(const void *key1, const void *key2, Size keysize)
{
	const LeaseKey *a = key1;
	const LeaseKey *b = key2;

	if (a->dboid != b->dboid || a->len != b->len)
		return 1;
	return memcmp(a->name, b->name, a->len);
}

/* called with AddinShmemInitLock held */
void
dtx_lease_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	ls = ShmemInitStruct("pg_dtx leases", lease_shared_size(), &found);
	if (!found)
	{
		int			i;

		memset(ls, 0, lease_shared_size());
		ls->locks = GetNamedLWLockTranche("pg_dtx_leases");
		SpinLockInit(&ls->mutex);
		pg_atomic_init_u32(&ls->queued, 0);
		for (i = 0; i < LEASE_MAX_DBS; i++)
		{
			SpinLockInit(&ls->dbs[i].mutex);
			pg_atomic_init_u64(&ls->dbs[i].wakeups, 0);
			pg_atomic_init_u64(&ls->dbs[i].next, 0);
			pg_atomic_init_u64(&ls->dbs[i].reserved, 0);
			pg_atomic_init_u64(&ls->dbs[i].horizon, (uint64) DT_NOBEGIN);
			pg_atomic_init_u64(&ls->dbs[i].max_ttl_us, 0);
			ConditionVariableInit(&ls->dbs[i].cv);
		}
		ls->nwaiters = lease_nprocs();
		for (i = 0; i < ls->nwaiters; i++)
			ls->waiters[i].next = -1;
	}

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(LeaseKey);
	info.entrysize = sizeof(Lease);
	info.hash = lease_key_hash;
	info.match = lease_key_match;
	info.num_partitions = LEASE_PARTITIONS;
	lease_htab = ShmemInitHash("pg_dtx lease table",
							   dtx_max_leases, dtx_max_leases, &info,
							   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE |
							   HASH_PARTITION | HASH_FIXED_SIZE);

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(Oid);
	info.entrysize = sizeof(LeaseRoleCount);
	lease_roles = ShmemInitHash("pg_dtx lease roles",
								dtx_max_leases, dtx_max_leases, &info,
								HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

/*
 * dtx_lease_mark_epoch records when leases could first be granted by this
 * server: the launcher calls it when it starts, which is after crash
 * recovery or promotion.  The first backend to use leases calls it too, in
 * case it runs before the launcher.
 */
void
dtx_lease_mark_epoch(void)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&ls->mutex);
	if (ls->epoch == 0)
		ls->epoch = now;
	SpinLockRelease(&ls->mutex);
}

static int64
mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static LWLock *
lease_partition_lock(uint32 hash)
{
	return &ls->locks[hash % LEASE_PARTITIONS].lock;
}

static void
set_proc_latch(int procno)
{
	SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

/* ------------------------------------------------------------------------
 * Durable token ranges
 * ------------------------------------------------------------------------
 */

/*
 * lease_db returns this database's slot, allocating it on first use.
 * Leases are changed on the primary only: for_change refuses during
 * recovery.
 */
static LeaseDb *
lease_db(bool for_change)
{
	static LeaseDb *mine = NULL;	/* slots are never given back */
	LeaseDb    *free_slot = NULL;
	int			i;

	if (for_change && RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("leases cannot be acquired or changed during recovery"),
				 errhint("Use the primary server.")));
	if (mine != NULL)
		return mine;

	SpinLockAcquire(&ls->mutex);
	for (i = 0; i < LEASE_MAX_DBS; i++)
	{
		if (ls->dbs[i].dboid == MyDatabaseId)
		{
			SpinLockRelease(&ls->mutex);
			mine = &ls->dbs[i];
			return mine;
		}
		if (ls->dbs[i].dboid == InvalidOid && free_slot == NULL)
			free_slot = &ls->dbs[i];
	}
	if (free_slot)
		free_slot->dboid = MyDatabaseId;	/* the other fields are zero */
	if (ls->epoch == 0 && for_change)
		ls->epoch = GetCurrentTimestamp();
	SpinLockRelease(&ls->mutex);

	if (free_slot == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("leases are in use in too many databases"),
				 errdetail("At most %d databases of one server can use leases.",
						   LEASE_MAX_DBS)));
	mine = free_slot;
	return mine;
}

/*
 * lease_wait_standbys waits until the synchronous standbys have flushed
 * WAL up to lsn, as a commit with synchronous_commit = on would; a no-op
 * without synchronous replication.  A wait cancelled by the user is an
 * error here, not a warning: the reservation is not confirmed.
 */
static void
lease_wait_standbys(XLogRecPtr lsn)
{
	int			nest;
	bool		confirmed;

	if (max_wal_senders == 0 || SyncRepStandbyNames == NULL ||
		SyncRepStandbyNames[0] == '\0')
		return;

	nest = NewGUCNestLevel();
	if (synchronous_commit < SYNCHRONOUS_COMMIT_REMOTE_FLUSH)
		(void) set_config_option("synchronous_commit", "on",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	/* as at commit: a cancel ends the wait with a warning, not an error */
	HOLD_INTERRUPTS();
	SyncRepWaitForLSN(lsn, false);
	RESUME_INTERRUPTS();
	AtEOXact_GUC(true, nest);

	LWLockAcquire(SyncRepLock, LW_SHARED);
	confirmed = WalSndCtl->lsn[SYNC_REP_WAIT_FLUSH] >= lsn;
	LWLockRelease(SyncRepLock);
	CHECK_FOR_INTERRUPTS();
	if (!confirmed)
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("canceled waiting for the synchronous standbys to confirm a fencing token reservation"),
				 errdetail("No lease was granted.")));
}

/*
 * lease_row_open opens dtx.lease_tokens in the given lock mode and returns
 * (palloc'd) its row, or of its rows the one with the highest reservation:
 * a pg_dump restore adds the dumped row to the one CREATE EXTENSION
 * inserted.  The caller closes the table.
 */
static HeapTuple
lease_row_open(Relation *rel, LOCKMODE mode)
{
	Oid			nsp = get_namespace_oid("dtx", false);
	Oid			relid = get_relname_relid("lease_tokens", nsp);
	SysScanDesc scan;
	HeapTuple	tup;
	HeapTuple	best = NULL;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table dtx.lease_tokens does not exist"),
				 errhint("Reinstall the extension pg_dtx.")));
	*rel = table_open(relid, mode);
	scan = systable_beginscan(*rel, InvalidOid, false, SnapshotSelf, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		if (HeapTupleHasNulls(tup))
			continue;
		if (best == NULL ||
			((FormData_lease_tokens *) GETSTRUCT(tup))->reserved >
			((FormData_lease_tokens *) GETSTRUCT(best))->reserved)
			best = heap_copytuple(tup);
	}
	systable_endscan(scan);
	if (best == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("table dtx.lease_tokens has no row"),
				 errhint("Reinstall the extension pg_dtx.")));
	return best;
}

/*
 * lease_reserve reads the row of dtx.lease_tokens (loading the counter on
 * first use), raises what needs raising (the reserved range, the horizon
 * for a lease of ttl_us from now, the longest TTL) and makes the change
 * durable before publishing it.  The caller holds db->reserving.
 */
static void
lease_reserve(LeaseDb *db, int64 ttl_us)
{
	Relation	rel;
	HeapTuple	copy;
	FormData_lease_tokens row;
	FormData_lease_tokens *f;
	TimestampTz now = GetCurrentTimestamp();
	int64		next;
	bool		need_range;
	XLogRecPtr	lsn;

	/* the lock keeps out UPDATEs of the row by hand while we overwrite it */
	copy = lease_row_open(&rel, ShareRowExclusiveLock);
	f = (FormData_lease_tokens *) GETSTRUCT(copy);
	row = *f;

	/* leases can be granted from now on: the grace period starts here */
	SpinLockAcquire(&ls->mutex);
	if (ls->epoch == 0)
		ls->epoch = now;
	SpinLockRelease(&ls->mutex);

	/* draws may go on meanwhile, up to the reserved token: none beyond */
	next = db->loaded ? ATOMIC_GET(db->next) : row.reserved + 1;
	need_range = !db->loaded || next > ATOMIC_GET(db->reserved) - TOKEN_RANGE / 2;
	f->reserved = Max(Max(row.reserved, ATOMIC_GET(db->reserved)), next - 1);
	if (need_range)				/* one more range past what is used or reserved */
		f->reserved = Max(f->reserved,
						  Max(next - 1, ATOMIC_GET(db->reserved)) + TOKEN_RANGE);
	f->horizon = Max(row.horizon, ATOMIC_GET(db->horizon));
	if (now + ttl_us > f->horizon)
		f->horizon = now + 2 * ttl_us + USECS_PER_SEC;
	f->max_ttl_us = Max(Max(row.max_ttl_us, ATOMIC_GET(db->max_ttl_us)), ttl_us);

	/*
	 * Write, flush, and wait for the synchronous standbys.  A write whose
	 * wait was cancelled is waited for again by the next reservation, even
	 * if it finds nothing more to write.
	 */
	lsn = db->unconfirmed_lsn;
	if (memcmp(f, &row, sizeof(row)) != 0)
	{
		heap_inplace_update(rel, copy);
		lsn = XactLastRecEnd;
		XLogFlush(lsn);
	}
	if (lsn != InvalidXLogRecPtr)
	{
		db->unconfirmed_lsn = lsn;
		lease_wait_standbys(lsn);
		db->unconfirmed_lsn = InvalidXLogRecPtr;
	}
	table_close(rel, ShareRowExclusiveLock);	/* not held to commit: the
												 * write is not transactional */

	/* publish: durable now */
	ATOMIC_SET(db->reserved, f->reserved);
	ATOMIC_SET(db->horizon, f->horizon);
	ATOMIC_SET(db->max_ttl_us, f->max_ttl_us);
	if (!db->loaded)
	{
		TimestampTz grace;

		/* a client may believe it holds a lease until then */
		grace = Min(row.horizon, ls->epoch + row.max_ttl_us);
		if (grace > now)
		{
			db->grace_until = grace;
			db->grace_until_mono = mono_now() + (grace - now);
		}
		ATOMIC_SET(db->next, next);
		pg_write_barrier();
		db->loaded = true;
	}
	db->flushes++;
	heap_freetuple(copy);
}

static void
lease_reserve_done(int code, Datum arg)
{
	LeaseDb    *db = (LeaseDb *) DatumGetPointer(arg);

	SpinLockAcquire(&db->mutex);
	db->reserving = false;
	SpinLockRelease(&db->mutex);
	ConditionVariableBroadcast(&db->cv);
}

/*
 * lease_ensure returns once the database's counter has a token in range,
 * and the horizon covers a lease of ttl_us from now; it reserves (one
 * backend at a time, the others wait) when not.
 */
static void
lease_ensure(LeaseDb *db, int64 ttl_us)
{
	bool		prepared = false;

	for (;;)
	{
		TimestampTz until = GetCurrentTimestamp() + ttl_us;

		if (db->loaded)
		{
			int64		next;
			int64		reserved;

			pg_read_barrier();
			next = ATOMIC_GET(db->next);
			reserved = ATOMIC_GET(db->reserved);
			if (next <= reserved &&
				until <= ATOMIC_GET(db->horizon) &&
				ttl_us <= ATOMIC_GET(db->max_ttl_us))
			{
				/*
				 * Half the range is used: reserve the next one ahead, unless
				 * someone does already.  The others go on drawing meanwhile.
				 */
				if (reserved - next < TOKEN_RANGE / 2 && !db->reserving && !prepared)
				{
					bool		mine = false;

					SpinLockAcquire(&db->mutex);
					if (!db->reserving)
						db->reserving = mine = true;
					SpinLockRelease(&db->mutex);
					if (mine)
					{
						PG_ENSURE_ERROR_CLEANUP(lease_reserve_done, PointerGetDatum(db));
						{
							lease_reserve(db, ttl_us);
						}
						PG_END_ENSURE_ERROR_CLEANUP(lease_reserve_done, PointerGetDatum(db));
						lease_reserve_done(0, PointerGetDatum(db));
					}
				}
				break;
			}
		}
		SpinLockAcquire(&db->mutex);
		if (db->reserving)
		{
			SpinLockRelease(&db->mutex);
			if (!prepared)
				ConditionVariablePrepareToSleep(&db->cv);
			else
				ConditionVariableSleep(&db->cv, PG_WAIT_EXTENSION);
			prepared = true;
			continue;
		}
		db->reserving = true;
		SpinLockRelease(&db->mutex);

		PG_ENSURE_ERROR_CLEANUP(lease_reserve_done, PointerGetDatum(db));
		{
			lease_reserve(db, ttl_us);
		}
		PG_END_ENSURE_ERROR_CLEANUP(lease_reserve_done, PointerGetDatum(db));
		lease_reserve_done(0, PointerGetDatum(db));
	}
	if (prepared)
		ConditionVariableCancelSleep();
}

/*
 * lease_draw hands out the next token if the reserved range has one and
 * the horizon covers 'until'; else 0 (the caller ensures and retries).
 * Called under the lease's partition lock, so that the tokens of one lease
 * increase in the order of its grants.
 */
static int64
lease_draw(LeaseDb *db, TimestampTz until)
{
	uint64		t;

	if (!db->loaded)
		return 0;
	pg_read_barrier();
	if (until > ATOMIC_GET(db->horizon))
		return 0;
	t = pg_atomic_read_u64(&db->next);
	do
	{
		if ((int64) t > ATOMIC_GET(db->reserved))
			return 0;
	} while (!pg_atomic_compare_exchange_u64(&db->next, &t, t + 1));
	return (int64) t;
}

/* grace_until_mono is written once, when the counter is loaded */
static bool
lease_in_grace(LeaseDb *db, int64 now, int64 *until)
{
	*until = db->grace_until_mono;
	return *until > now;
}

/* ------------------------------------------------------------------------
 * The lease table
 * ------------------------------------------------------------------------
 */

static void
lease_key_init(LeaseKey *key, text *name)
{
	int			len = VARSIZE_ANY_EXHDR(name);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease name must not be empty")));
	if (len > DTX_LEASE_NAME_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("lease name is too long"),
				 errdetail("It has %d bytes; the limit is %d.",
						   len, DTX_LEASE_NAME_MAX)));
	memset(key, 0, sizeof(*key));
	key->dboid = MyDatabaseId;
	key->len = len;
	memcpy(key->name, VARDATA_ANY(name), len);
}

static void
lease_enqueue(Lease *l, int procno)
{
	LeaseWaiter *w = &ls->waiters[procno];

	w->next = -1;
	w->queued = true;
	if (l->tail >= 0)
		ls->waiters[l->tail].next = procno;
	else
		l->head = procno;
	l->tail = procno;
	l->nwaiters++;
	pg_atomic_fetch_add_u32(&ls->queued, 1);
}

/* removes procno from the queue; returns true if it was the head */
static bool
lease_dequeue(Lease *l, int procno)
{
	int			prev = -1;
	int			cur = l->head;

	while (cur >= 0 && cur != procno)
	{
		prev = cur;
		cur = ls->waiters[cur].next;
	}
	if (cur < 0)
		return false;
	if (prev >= 0)
		ls->waiters[prev].next = ls->waiters[cur].next;
	else
		l->head = ls->waiters[cur].next;
	if (l->tail == procno)
		l->tail = prev;
	ls->waiters[cur].next = -1;
	ls->waiters[cur].queued = false;
	l->nwaiters--;
	pg_atomic_fetch_sub_u32(&ls->queued, 1);
	return prev < 0;
}

/* leases held by role now (the role lock held) */
static int
lease_role_count_locked(Oid role)
{
	LeaseRoleCount *c = hash_search(lease_roles, &role, HASH_FIND, NULL);

	return c ? c->count : 0;
}

/*
 * lease_take_role records that role holds (or is being handed) lease l,
 * and counts it for the role; with limit >= 0, only if the role holds
 * fewer than limit leases (returns false, changing nothing, otherwise).
 * InvalidOid when the holding ends.  Called under the lease's partition
 * lock whenever the role of a lease changes; never fails otherwise.
 */
static bool
lease_take_role(Lease *l, Oid role, int limit)
{
	LeaseRoleCount *c;
	bool		found;

	if (l->role == role)
		return true;
	LWLockAcquire(LEASE_ROLES_LOCK, LW_EXCLUSIVE);
	if (OidIsValid(role) && limit >= 0 && lease_role_count_locked(role) >= limit)
	{
		LWLockRelease(LEASE_ROLES_LOCK);
		return false;
	}
	if (OidIsValid(l->role) &&
		(c = hash_search(lease_roles, &l->role, HASH_FIND, NULL)) != NULL &&
		--c->count <= 0)
		(void) hash_search(lease_roles, &l->role, HASH_REMOVE, NULL);
	/* never NULL: a role in the table holds a lease entry at least */
	if (OidIsValid(role) &&
		(c = hash_search(lease_roles, &role, HASH_ENTER_NULL, &found)) != NULL)
		c->count = found ? c->count + 1 : 1;
	LWLockRelease(LEASE_ROLES_LOCK);
	l->role = role;
	return true;
}

static void
lease_set_role(Lease *l, Oid role)
{
	(void) lease_take_role(l, role, -1);
}

static int
lease_role_count(Oid role)
{
	int			n;

	LWLockAcquire(LEASE_ROLES_LOCK, LW_SHARED);
	n = lease_role_count_locked(role);
	LWLockRelease(LEASE_ROLES_LOCK);
	return n;
}

static void
lease_quota_exceeded(Oid role, int limit)
{
	char	   *rolename = GetUserNameFromId(role, true);

	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("role \"%s\" holds too many leases", rolename ? rolename : "?"),
			 errdetail("dtx.max_leases_per_role is %d, in all databases together.",
					   limit),
			 errhint("Release leases, or ask an administrator to raise dtx.max_leases_per_role for the role.")));
}

/* the limit of dtx.max_leases_per_role for the current user; -1: none */
static int
lease_quota(void)
{
	return superuser() ? -1 : dtx_max_leases_per_role;
}

/*
 * lease_check_role raises 42501 unless the current user has the privileges
 * of 'role', which holds (or is being handed) lease key.  Catalog lookups:
 * call it without the partition lock, then look at the lease again.
 */
static void
lease_check_role(LeaseKey *key, Oid role, const char *action)
{
	char	   *rolename;

	if (has_privs_of_role(GetUserId(), role))
		return;
	rolename = GetUserNameFromId(role, true);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s lease \"%s\"", action, key->name),
			 rolename ?
			 errdetail("The lease is held by role \"%s\"; only roles with its privileges and superusers may %s it.",
					   rolename, action) :
			 errdetail("The lease is held by a dropped role (OID %u); only superusers may %s it.",
					   role, action)));
}

/*
 * lease_foreign_role: the role to check before acting on l with a token,
 * or InvalidOid when there is nothing to check (free, ours, or already
 * checked in this call).
 */
static Oid
lease_foreign_role(Lease *l, Oid checked)
{
	if (l == NULL || l->state == LEASE_FREE || !OidIsValid(l->role) ||
		l->role == GetUserId() || l->role == checked)
		return InvalidOid;
	return l->role;
}

/*
 * lease_free_locked ends the current holding (release, expiry taken over,
 * break): the head waiter is granted the lease and woken, alone; with no
 * waiter the entry goes away.
 */
static void
lease_free_locked(Lease *l, uint32 hash, int64 now)
{
	if (l->head >= 0)
	{
		int			h = l->head;
		LeaseWaiter *w = &ls->waiters[h];

		(void) lease_dequeue(l, h);
		l->state = LEASE_GRANTING;
		l->owner = h;
		l->owner_pid = w->pid;
		lease_set_role(l, w->role);
		l->session = w->session;
		l->token = 0;
		l->acquired_at = 0;
		l->expires_at = 0;
		l->expires_mono = now + w->ttl_us;
		strlcpy(l->holder, w->holder, sizeof(l->holder));
		set_proc_latch(h);
	}
	else
	{
		lease_set_role(l, InvalidOid);
		(void) hash_search_with_hash_value(lease_htab, &l->key, hash,
										   HASH_REMOVE, NULL);
	}
}

/*
 * lease_sweep removes expired entries nobody waits for, from every
 * partition; returns how many.  Used when the table is full.
 */
static int
lease_sweep(void)
{
	HASH_SEQ_STATUS scan;
	Lease	   *l;
	int64		now = mono_now();
	int			removed = 0;
	int			i;

	for (i = 0; i < LEASE_PARTITIONS; i++)
		LWLockAcquire(&ls->locks[i].lock, LW_EXCLUSIVE);
	hash_seq_init(&scan, lease_htab);
	while ((l = hash_seq_search(&scan)) != NULL)
	{
		if (l->head < 0 &&
			(l->state == LEASE_FREE || l->expires_mono <= now))
		{
			lease_set_role(l, InvalidOid);
			(void) hash_search(lease_htab, &l->key, HASH_REMOVE, NULL);
			removed++;
		}
	}
	for (i = LEASE_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&ls->locks[i].lock);
	return removed;
}

/*
 * dtx_lease_watchdog, run by the launcher about once a second, wakes the
 * first waiter of every lease that has lapsed: a grant its grantee never
 * took up (frozen, or stuck waiting for a standby), or a holding renewed
 * to a shorter TTL than the first waiter is timing.  The first waiter
 * normally times expiries itself; this is the safety net.
 */
void
dtx_lease_watchdog(void)
{
	HASH_SEQ_STATUS scan;
	Lease	   *l;
	int64		now;
	int			i;

	if (pg_atomic_read_u32(&ls->queued) == 0)
		return;
	now = mono_now();
	for (i = 0; i < LEASE_PARTITIONS; i++)
		LWLockAcquire(&ls->locks[i].lock, LW_SHARED);
	hash_seq_init(&scan, lease_htab);
	while ((l = hash_seq_search(&scan)) != NULL)
	{
		if (l->head >= 0 && l->expires_mono <= now)
			set_proc_latch(l->head);
	}
	for (i = LEASE_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&ls->locks[i].lock);
}

static Lease *
lease_enter(LeaseKey *key, uint32 hash)
{
	Lease	   *l;
	bool		found;

	l = hash_search_with_hash_value(lease_htab, key, hash, HASH_ENTER_NULL,
									&found);
	if (l == NULL)
		return NULL;
	if (!found)
	{
		l->state = LEASE_FREE;
		l->token = 0;
		l->owner = -1;
		l->owner_pid = 0;
		l->role = InvalidOid;
		l->session = false;
		l->head = l->tail = -1;
		l->nwaiters = 0;
		l->holder[0] = '\0';
	}
	return l;
}

static void
lease_table_full(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("too many leases"),
			 errdetail("All %d entries of the lease table are in use.",
					   dtx_max_leases),
			 errhint("Release leases, or raise dtx.max_leases (takes a restart).")));
}

/* error or exit while waiting: leave the queue, pass on a grant */
static void
lease_wait_cleanup(int code, Datum arg)
{
	LWLock	   *lock;
	Lease	   *l;
	int			me = MyProc->pgprocno;

	if (!cur_wait.active)
		return;
	cur_wait.active = false;
	lock = lease_partition_lock(cur_wait.hash);
	LWLockAcquire(lock, LW_EXCLUSIVE);
	l = hash_search_with_hash_value(lease_htab, &cur_wait.key, cur_wait.hash,
									HASH_FIND, NULL);
	if (l)
	{
		if (ls->waiters[me].queued && lease_dequeue(l, me) && l->head >= 0)
			set_proc_latch(l->head);
		if (l->state == LEASE_GRANTING && l->owner == me)
			lease_free_locked(l, cur_wait.hash, mono_now());
		else if (l->state == LEASE_FREE && l->head < 0)
			(void) hash_search_with_hash_value(lease_htab, &l->key,
											   cur_wait.hash, HASH_REMOVE,
											   NULL);
	}
	ls->waiters[me].queued = false;
	LWLockRelease(lock);
}

static void
session_leases_release(int code, Datum arg)
{
	int			i;
	int64		now = mono_now();

	for (i = 0; i < n_session_leases; i++)
	{
		SessionLease *s = &session_leases[i];
		uint32		hash = get_hash_value(lease_htab, &s->key);
		LWLock	   *lock = lease_partition_lock(hash);
		Lease	   *l;

		LWLockAcquire(lock, LW_EXCLUSIVE);
		l = hash_search_with_hash_value(lease_htab, &s->key, hash,
										HASH_FIND, NULL);
		if (l && l->state == LEASE_HELD && l->token == s->token)
			lease_free_locked(l, hash, now);
		LWLockRelease(lock);
	}
	n_session_leases = 0;
}

static void
session_lease_forget(LeaseKey *key, int64 token)
{
	int			i;

	for (i = 0; i < n_session_leases; i++)
	{
		if (session_leases[i].token == token &&
			lease_key_match(&session_leases[i].key, key, 0) == 0)
		{
			session_leases[i] = session_leases[--n_session_leases];
			return;
		}
	}
}

/*
 * session_leases_prune forgets the session leases that this session no
 * longer holds (expired, taken over, broken, released by someone else).
 */
static void
session_leases_prune(void)
{
	int			i = 0;

	while (i < n_session_leases)
	{
		SessionLease *s = &session_leases[i];
		uint32		hash = get_hash_value(lease_htab, &s->key);
		LWLock	   *lock = lease_partition_lock(hash);
		Lease	   *l;
		bool		held;

		LWLockAcquire(lock, LW_SHARED);
		l = hash_search_with_hash_value(lease_htab, &s->key, hash,
										HASH_FIND, NULL);
		held = l && l->state == LEASE_HELD && l->token == s->token &&
			l->expires_mono > mono_now();
		LWLockRelease(lock);
		if (held)
			i++;
		else
			session_leases[i] = session_leases[--n_session_leases];
	}
}

/* makes room for one more session lease before it is granted */
static void
session_lease_reserve_slot(void)
{
	if (!session_exit_hook)
	{
		before_shmem_exit(session_leases_release, (Datum) 0);
		session_exit_hook = true;
	}
	if (n_session_leases < max_session_leases)
		return;
	session_leases_prune();
	if (n_session_leases < max_session_leases / 2)
		return;
	max_session_leases = Max(8, max_session_leases * 2);
	if (session_leases == NULL)
		session_leases = MemoryContextAlloc(TopMemoryContext,
											max_session_leases * sizeof(SessionLease));
	else
		session_leases = repalloc(session_leases,
								  max_session_leases * sizeof(SessionLease));
}

/*
 * lease_acquire_internal acquires key for ttl_us, waiting up to wait_us in
 * the FIFO queue.  Returns false if it did not get the lease in time.
 */
static bool
lease_acquire_internal(LeaseKey *key, int64 ttl_us, int64 wait_us,
					   const char *holder, bool session,
					   int64 *token, TimestampTz *expires_at)
{
	LeaseDb    *db = lease_db(true);
	uint32		hash = get_hash_value(lease_htab, key);
	LWLock	   *lock = lease_partition_lock(hash);
	int			me = MyProc->pgprocno;
	LeaseWaiter *w = &ls->waiters[me];
	int64		deadline;
	bool		acquired = false;
	bool		swept = false;
	int			quota = lease_quota();
	Oid			role = GetUserId();

	/*
	 * Over its quota, a role does not even queue: a lease it waited for
	 * would be handed to it regardless (the holder releasing it cannot
	 * fail).  Expired leases count until swept: sweep once before refusing.
	 */
	if (quota >= 0 && lease_role_count(role) >= quota &&
		(lease_sweep() == 0 || lease_role_count(role) >= quota))
		lease_quota_exceeded(role, quota);

	deadline = mono_now();
	deadline = (wait_us > PG_INT64_MAX - deadline) ? PG_INT64_MAX : deadline + wait_us;

	if (session)
		session_lease_reserve_slot();

	/* read by whoever hands us the lease, under the partition lock */
	LWLockAcquire(lock, LW_EXCLUSIVE);
	w->next = -1;
	w->queued = false;
	w->ttl_us = ttl_us;
	w->deadline = deadline;
	w->session = session;
	w->pid = MyProcPid;
	w->role = role;
	strlcpy(w->holder, holder, sizeof(w->holder));
	LWLockRelease(lock);

	cur_wait.key = *key;
	cur_wait.hash = hash;
	cur_wait.active = true;

	PG_ENSURE_ERROR_CLEANUP(lease_wait_cleanup, (Datum) 0);
	{
		for (;;)
		{
			Lease	   *l;
			int64		now;
			int64		grace_until;
			int64		timeout;
			bool		grace;
			bool		mine;
			bool		vacant;

			lease_ensure(db, ttl_us);

			LWLockAcquire(lock, LW_EXCLUSIVE);
			now = mono_now();
			l = lease_enter(key, hash);
			if (l == NULL)
			{
				LWLockRelease(lock);
				if (!swept && lease_sweep() > 0)
				{
					swept = true;
					continue;
				}
				lease_table_full();
			}
			grace = lease_in_grace(db, now, &grace_until);
			mine = l->state == LEASE_GRANTING && l->owner == me;
			vacant = l->state == LEASE_FREE || l->expires_mono <= now;

			if (mine ||
				(vacant && !grace &&
				 (w->queued ? l->head == me : l->head < 0)))
			{
				TimestampTz wall = GetCurrentTimestamp();
				int64		t;

				t = lease_draw(db, wall + ttl_us);
				if (t == 0)
				{
					/* range used up meanwhile: reserve, then try again */
					LWLockRelease(lock);
					continue;
				}
				/*
				 * Within the quota (a lease handed to us counts already)?
				 * If not, the token drawn is skipped: tokens only have to
				 * increase.
				 */
				if (!mine && !lease_take_role(l, role, quota))
				{
					LWLockRelease(lock);
					if (!swept && lease_sweep() > 0)
					{
						swept = true;
						continue;
					}
					lease_quota_exceeded(role, quota);
				}
				if (w->queued)
					(void) lease_dequeue(l, me);
				l->state = LEASE_HELD;
				l->token = t;
				l->acquired_at = wall;
				l->expires_at = wall + ttl_us;
				l->expires_mono = now + ttl_us;
				l->owner = session ? me : -1;
				l->owner_pid = MyProcPid;
				l->session = session;
				strlcpy(l->holder, holder, sizeof(l->holder));
				/*
				 * The next waiter now watches our expiry, unless it gives up
				 * before that anyway.
				 */
				if (l->head >= 0 &&
					ls->waiters[l->head].deadline > l->expires_mono)
					set_proc_latch(l->head);
				if (session)
				{
					session_leases[n_session_leases].key = *key;
					session_leases[n_session_leases].token = t;
					n_session_leases++;
				}
				*token = t;
				*expires_at = l->expires_at;
				acquired = true;
				cur_wait.active = false;
				LWLockRelease(lock);
				break;
			}

			if (now >= deadline)
			{
				if (w->queued && lease_dequeue(l, me) && l->head >= 0)
					set_proc_latch(l->head);
				if (l->state == LEASE_FREE && l->head < 0)
					(void) hash_search_with_hash_value(lease_htab, key, hash,
													   HASH_REMOVE, NULL);
				cur_wait.active = false;
				LWLockRelease(lock);
				break;
			}

			if (!w->queued)
				lease_enqueue(l, me);
			timeout = deadline - now;
			if (l->head == me)
			{
				if (l->state != LEASE_FREE)
					timeout = Min(timeout, l->expires_mono - now);
				if (grace)
					timeout = Min(timeout, grace_until - now);
			}
			LWLockRelease(lock);

			timeout = (timeout + 999) / 1000;	/* ms, rounded up */
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 (long) Min(Max(timeout, 1), PG_INT32_MAX),
							 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			pg_atomic_fetch_add_u64(&db->wakeups, 1);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_END_ENSURE_ERROR_CLEANUP(lease_wait_cleanup, (Datum) 0);

	return acquired;
}

/* ------------------------------------------------------------------------
 * SQL functions
 * ------------------------------------------------------------------------
 */

/* an interval as microseconds; months count 30 days, days 24 hours */
static int64
interval_usecs(Interval *iv, const char *what)
{
	int64		us = iv->time;
	int64		days;

	if (pg_mul_s64_overflow((int64) iv->month, DAYS_PER_MONTH, &days) ||
		pg_add_s64_overflow(days, iv->day, &days) ||
		pg_mul_s64_overflow(days, USECS_PER_DAY, &days) ||
		pg_add_s64_overflow(us, days, &us))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is out of range", what)));
	return us;
}

static int64
lease_ttl_arg(FunctionCallInfo fcinfo, int argno)
{
	int64		ttl;
	int			limit = dtx_lease_max_ttl;
	const char *setting = "dtx.lease_max_ttl";

	dtx_check_not_null(fcinfo, argno, "ttl");
	ttl = interval_usecs(PG_GETARG_INTERVAL_P(argno), "ttl");
	if (ttl <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl must be positive")));
	if (dtx_lease_user_max_ttl < limit && !superuser())
	{
		limit = dtx_lease_user_max_ttl;
		setting = "dtx.lease_user_max_ttl";
	}
	if (ttl > (int64) limit * USECS_PER_SEC)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl is longer than %s", setting),
				 errdetail("%s is %d s.", setting, limit),
				 errhint("Renew the lease with a shorter TTL more often, or ask an administrator to raise %s.",
						 setting)));
	return ttl;
}

/* argument 0, the lease name: its key, hash and partition lock */
static LWLock *
lease_name_arg(FunctionCallInfo fcinfo, LeaseKey *key, uint32 *hash)
{
	dtx_check_not_null(fcinfo, 0, "lease name");
	lease_key_init(key, PG_GETARG_TEXT_PP(0));
	*hash = get_hash_value(lease_htab, key);
	return lease_partition_lock(*hash);
}

PG_FUNCTION_INFO_V1(dtx_lease_acquire);

/*
 * dtx.lease_acquire(name, ttl, wait, holder, session)
 *		→ (token bigint, expires_at timestamptz), or NULL if not acquired.
 */
Datum
dtx_lease_acquire(PG_FUNCTION_ARGS)
{
	LeaseKey	key;
	int64		ttl_us;
	int64		wait_us;
	char	   *holder;
	bool		session;
	int64		token;
	TimestampTz expires_at;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	dtx_check_not_null(fcinfo, 0, "lease name");
	dtx_check_not_null(fcinfo, 2, "wait");
	dtx_check_not_null(fcinfo, 4, "session");
	lease_key_init(&key, PG_GETARG_TEXT_PP(0));
	ttl_us = lease_ttl_arg(fcinfo, 1);
	wait_us = interval_usecs(PG_GETARG_INTERVAL_P(2), "wait");
	if (wait_us < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wait must not be negative")));
	if (PG_ARGISNULL(3))
		holder = (application_name && application_name[0]) ?
			psprintf("%s pid %d", application_name, MyProcPid) :
			psprintf("pid %d", MyProcPid);
	else
		holder = text_to_cstring(PG_GETARG_TEXT_PP(3));
	if (strlen(holder) > DTX_LEASE_HOLDER_MAX)
	{
		if (!PG_ARGISNULL(3))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("lease holder is too long"),
					 errdetail("The limit is %d bytes.", DTX_LEASE_HOLDER_MAX)));
		holder[pg_mbcliplen(holder, strlen(holder), DTX_LEASE_HOLDER_MAX)] = '\0';
	}
	session = PG_GETARG_BOOL(4);

	tupdesc = (TupleDesc) fcinfo->flinfo->fn_extra;
	if (tupdesc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		fcinfo->flinfo->fn_extra = tupdesc;
		MemoryContextSwitchTo(old);
	}

	if (!lease_acquire_internal(&key, ttl_us, wait_us, holder, session,
								&token, &expires_at))
		PG_RETURN_NULL();

	values[0] = Int64GetDatum(token);
	values[1] = TimestampTzGetDatum(expires_at);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

static void
lease_not_held(LeaseKey *key, int64 token, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_DTX_LEASE_NOT_HELD),
			 errmsg("lease \"%s\" is not held with token " INT64_FORMAT,
					key->name, token),
			 errdetail_internal("%s", detail)));
}

PG_FUNCTION_INFO_V1(dtx_lease_renew);

/*
 * dtx.lease_renew(name, token, ttl) → new expires_at.  Compare-and-set on
 * (name, token); a lease that expired or changed hands fails with DX011.
 * A lease held by a role whose privileges the caller does not have fails
 * with 42501 whatever the token.
 */
Datum
dtx_lease_renew(PG_FUNCTION_ARGS)
{
	LeaseKey	key;
	int64		token;
	int64		ttl_us;
	LeaseDb    *db;
	uint32		hash;
	LWLock	   *lock;
	TimestampTz expires_at;
	Oid			checked = InvalidOid;

	lock = lease_name_arg(fcinfo, &key, &hash);
	dtx_check_not_null(fcinfo, 1, "token");
	token = PG_GETARG_INT64(1);
	ttl_us = lease_ttl_arg(fcinfo, 2);
	db = lease_db(true);

	for (;;)
	{
		Lease	   *l;
		int64		now;
		TimestampTz wall;
		bool		covered;
		char	   *detail = NULL;
		Oid			role;

		lease_ensure(db, ttl_us);
		LWLockAcquire(lock, LW_EXCLUSIVE);
		now = mono_now();
		wall = GetCurrentTimestamp();
		l = hash_search_with_hash_value(lease_htab, &key, hash, HASH_FIND, NULL);
		if (OidIsValid(role = lease_foreign_role(l, checked)))
		{
			LWLockRelease(lock);
			lease_check_role(&key, role, "renew");
			checked = role;
			continue;
		}
		if (l == NULL || l->state == LEASE_FREE)
			detail = pstrdup("Nobody holds it.");
		else if (l->state == LEASE_GRANTING)
			detail = pstrdup("It is being handed to the next waiter.");
		else if (l->token != token)
			detail = psprintf("It is held with token " INT64_FORMAT ".", l->token);
		else if (l->expires_mono <= now)
			detail = psprintf("It expired at %s.",
							  timestamptz_to_str(l->expires_at));
		if (detail)
		{
			LWLockRelease(lock);
			lease_not_held(&key, token, detail);
		}
		covered = wall + ttl_us <= ATOMIC_GET(db->horizon);
		if (!covered)
		{
			LWLockRelease(lock);
			continue;
		}
		/* a shorter holding: the first waiter is timing the old expiry */
		if (l->head >= 0 && now + ttl_us < l->expires_mono)
			set_proc_latch(l->head);
		l->expires_at = wall + ttl_us;
		l->expires_mono = now + ttl_us;
		expires_at = l->expires_at;
		LWLockRelease(lock);
		break;
	}
	PG_RETURN_TIMESTAMPTZ(expires_at);
}

PG_FUNCTION_INFO_V1(dtx_lease_release);

/*
 * dtx.lease_release(name, token) → true if the lease was held with that
 * token and had not expired.  The next waiter, if any, gets it.  As for
 * renew, the caller needs the privileges of the holding role (42501).
 */
Datum
dtx_lease_release(PG_FUNCTION_ARGS)
{
	LeaseKey	key;
	int64		token;
	uint32		hash;
	LWLock	   *lock;
	Lease	   *l;
	bool		released = false;
	Oid			checked = InvalidOid;
	Oid			role;

	lock = lease_name_arg(fcinfo, &key, &hash);
	dtx_check_not_null(fcinfo, 1, "token");
	token = PG_GETARG_INT64(1);
	(void) lease_db(true);

	for (;;)
	{
		LWLockAcquire(lock, LW_EXCLUSIVE);
		l = hash_search_with_hash_value(lease_htab, &key, hash, HASH_FIND, NULL);
		if (!OidIsValid(role = lease_foreign_role(l, checked)))
			break;
		LWLockRelease(lock);
		lease_check_role(&key, role, "release");
		checked = role;
	}
	if (l && l->state == LEASE_HELD && l->token == token)
	{
		int64		now = mono_now();

		released = l->expires_mono > now;
		lease_free_locked(l, hash, now);
	}
	LWLockRelease(lock);
	session_lease_forget(&key, token);
	PG_RETURN_BOOL(released);
}

PG_FUNCTION_INFO_V1(dtx_lease_break);

/*
 * dtx.lease_break(name) → a fresh token, higher than the broken holder's,
 * or NULL if nobody held the lease.  The next waiter gets the lease.
 */
Datum
dtx_lease_break(PG_FUNCTION_ARGS)
{
	LeaseKey	key;
	LeaseDb    *db;
	uint32		hash;
	LWLock	   *lock;
	int64		token = 0;

	lock = lease_name_arg(fcinfo, &key, &hash);
	db = lease_db(true);

	for (;;)
	{
		Lease	   *l;
		int64		now;

		lease_ensure(db, 0);
		LWLockAcquire(lock, LW_EXCLUSIVE);
		now = mono_now();
		l = hash_search_with_hash_value(lease_htab, &key, hash, HASH_FIND, NULL);
		if (l == NULL || l->state == LEASE_FREE || l->expires_mono <= now)
		{
			LWLockRelease(lock);
			break;
		}
		token = lease_draw(db, GetCurrentTimestamp());
		if (token == 0)
		{
			LWLockRelease(lock);
			continue;
		}
		lease_free_locked(l, hash, now);
		LWLockRelease(lock);
		break;
	}
	if (token == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(token);
}

/*
 * dtx_lease_check: the holder rule of fenced tables.  Is lease 'name' of
 * this database held with 'token', unexpired?  *current gets the token it
 * is held with (0 if none), *role the role holding it (InvalidOid if none);
 * the caller checks that the writer has that role's privileges.
 */
DtxLeaseCheck
dtx_lease_check(const char *name, int len, int64 token, int64 *current,
				Oid *role)
{
	LeaseKey	key;
	uint32		hash;
	LWLock	   *lock;
	Lease	   *l;
	DtxLeaseCheck result = DTX_LEASE_NOT_HELD;

	*current = 0;
	*role = InvalidOid;
	if (len <= 0 || len > DTX_LEASE_NAME_MAX)
		return DTX_LEASE_NOT_HELD;
	memset(&key, 0, sizeof(key));
	key.dboid = MyDatabaseId;
	key.len = len;
	memcpy(key.name, name, len);
	hash = get_hash_value(lease_htab, &key);
	lock = lease_partition_lock(hash);

	LWLockAcquire(lock, LW_SHARED);
	l = hash_search_with_hash_value(lease_htab, &key, hash, HASH_FIND, NULL);
	if (l && l->state == LEASE_HELD)
	{
		*current = l->token;
		*role = l->role;
		if (l->token != token)
			result = DTX_LEASE_OTHER_TOKEN;
		else if (l->expires_mono <= mono_now())
			result = DTX_LEASE_EXPIRED;
		else
			result = DTX_LEASE_OK;
	}
	LWLockRelease(lock);
	return result;
}

PG_FUNCTION_INFO_V1(dtx_leases);

/*
 * dtx.leases(): the leases of this database that are held, being handed
 * over, or waited for.  Backs the dtx.leases view.  The token is shown
 * only to roles with the privileges of the holding role (superusers
 * included), NULL to others.
 */
Datum
dtx_leases(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS scan;
	Lease	   *l;
	Lease	   *copies;
	int			n = 0;
	int64		now = mono_now();
	int			i;

	InitMaterializedSRF(fcinfo, 0);

	/* copy under the locks (as GetLockStatusData does), emit after */
	for (i = 0; i < LEASE_PARTITIONS; i++)
		LWLockAcquire(&ls->locks[i].lock, LW_SHARED);
	copies = palloc(sizeof(Lease) * Max(hash_get_num_entries(lease_htab), 1));
	hash_seq_init(&scan, lease_htab);
	while ((l = hash_seq_search(&scan)) != NULL)
	{
		if (l->key.dboid != MyDatabaseId)
			continue;
		if ((l->state == LEASE_FREE || l->expires_mono <= now) && l->head < 0)
			continue;
		copies[n++] = *l;
	}
	for (i = LEASE_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&ls->locks[i].lock);

	for (i = 0; i < n; i++)
	{
		Datum		values[9];
		bool		nulls[9];
		bool		live;
		const char *state;
		char	   *rolename;

		l = &copies[i];
		live = l->state != LEASE_FREE && l->expires_mono > now;
		memset(nulls, 0, sizeof(nulls));
		if (!live)
			state = l->state == LEASE_FREE ? "free" : "expired";
		else
			state = l->state == LEASE_HELD ? "held" : "granting";
		values[0] = PointerGetDatum(cstring_to_text_with_len(l->key.name,
															 l->key.len));
		values[1] = CStringGetTextDatum(state);
		values[2] = CStringGetTextDatum(l->holder);
		values[3] = Int64GetDatum(l->token);
		values[4] = TimestampTzGetDatum(l->acquired_at);
		values[5] = TimestampTzGetDatum(l->expires_at);
		values[6] = Int32GetDatum(l->nwaiters);
		values[7] = Int32GetDatum(l->owner_pid);
		rolename = OidIsValid(l->role) ? GetUserNameFromId(l->role, true) : NULL;
		if (rolename)
		{
			Name		n = palloc0(NAMEDATALEN);

			namestrcpy(n, rolename);
			values[8] = NameGetDatum(n);
		}
		nulls[8] = rolename == NULL;
		if (l->state != LEASE_HELD)
			nulls[3] = nulls[4] = nulls[5] = true;
		else if (!has_privs_of_role(GetUserId(), l->role))
			nulls[3] = true;	/* the token is the holder's business */
		if (l->state == LEASE_FREE)
			nulls[2] = nulls[7] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	pfree(copies);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(dtx_lease_status);

/*
 * dtx.lease_status(): this database's token counter and grace period, and
 * the use of the lease table.
 */
Datum
dtx_lease_status(PG_FUNCTION_ARGS)
{
	LeaseDb    *db = lease_db(false);
	TupleDesc	tupdesc;
	Datum		values[9];
	bool		nulls[9];
	bool		loaded = db->loaded;
	int64		next;
	int64		reserved;
	TimestampTz horizon;
	int64		max_ttl_us;
	TimestampTz grace_until = db->grace_until;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	pg_read_barrier();
	next = ATOMIC_GET(db->next);
	reserved = ATOMIC_GET(db->reserved);
	horizon = ATOMIC_GET(db->horizon);
	max_ttl_us = ATOMIC_GET(db->max_ttl_us);
	memset(nulls, 0, sizeof(nulls));

	if (!loaded)
	{
		/* not used since the start: show the durable row, change nothing */
		Relation	rel;
		HeapTuple	row;
		FormData_lease_tokens *f;

		/* one call: GETSTRUCT() evaluates its argument twice */
		row = lease_row_open(&rel, AccessShareLock);
		f = (FormData_lease_tokens *) GETSTRUCT(row);
		reserved = f->reserved;
		horizon = f->horizon;
		max_ttl_us = f->max_ttl_us;
		SpinLockAcquire(&ls->mutex);
		if (ls->epoch != 0)
		{
			TimestampTz grace = Min(f->horizon, ls->epoch + f->max_ttl_us);

			if (grace > GetCurrentTimestamp())
				grace_until = grace;
		}
		SpinLockRelease(&ls->mutex);
		table_close(rel, AccessShareLock);
		heap_freetuple(row);
		nulls[0] = true;		/* drawn from reserved + 1 at first use */
	}

	values[0] = Int64GetDatum(next);
	values[1] = Int64GetDatum(reserved);
	values[2] = TimestampTzGetDatum(horizon);
	values[3] = DirectFunctionCall7(make_interval,
									Int32GetDatum(0), Int32GetDatum(0),
									Int32GetDatum(0), Int32GetDatum(0),
									Int32GetDatum(0), Int32GetDatum(0),
									Float8GetDatum((double) max_ttl_us / USECS_PER_SEC));
	values[4] = TimestampTzGetDatum(grace_until);
	nulls[4] = grace_until == 0;
	values[5] = Int64GetDatum((int64) db->flushes);
	values[6] = Int64GetDatum((int64) hash_get_num_entries(lease_htab));
	values[7] = Int32GetDatum(dtx_max_leases);
	values[8] = Int64GetDatum((int64) pg_atomic_read_u64(&db->wakeups));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}

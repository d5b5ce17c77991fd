/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  pg_dtx's shared memory.
 *
 * The live registry has one slot per backend (indexed by MyBackendId): a
 * backend that runs a two-phase global transaction publishes its full xid
 * there before it sends the first PREPARE TRANSACTION and clears it after
 * phase 2 (or when it exits).  Recovery skips every transaction listed, so
 * it never resolves a prepared transaction whose coordinator is still
 * deciding or committing it.  Slots are written by their owner only, with
 * atomics and barriers; readers take no lock.
 *
 * Counters are cluster-wide atomics, reset by a restart.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "lease.h"
#include "shmem.h"

DtxShared  *dtx_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool dtx_registry_exit_hook = false;

static Size
dtx_shmem_size(void)
{
	return add_size(offsetof(DtxShared, live),
					mul_size(MaxBackends, sizeof(((DtxShared *) 0)->live[0])));
}

static void
dtx_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(dtx_shmem_size());
	RequestNamedLWLockTranche("pg_dtx", 1);
	dtx_lease_shmem_request();
}

static void
dtx_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	dtx_shared = ShmemInitStruct("pg_dtx", dtx_shmem_size(), &found);
	if (!found)
	{
		int			i;

		memset(dtx_shared, 0, dtx_shmem_size());
		dtx_shared->lock = &(GetNamedLWLockTranche("pg_dtx"))->lock;
		if (!pg_strong_random(&dtx_shared->incarnation, sizeof(uint64)))
			dtx_shared->incarnation = (uint64) GetCurrentTimestamp() ^
				((uint64) MyProcPid << 32);
		dtx_shared->incarnation &= PG_INT64_MAX;	/* fits a bigint column */
		for (i = 0; i < DTX_NCOUNTERS; i++)
			pg_atomic_init_u64(&dtx_shared->counters[i], 0);
		dtx_shared->nlive = MaxBackends;
		for (i = 0; i < MaxBackends; i++)
			pg_atomic_init_u64(&dtx_shared->live[i].fxid, 0);
	}
	dtx_lease_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * dtx_shmem_init installs the hooks; called from _PG_init.
 */
void
dtx_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = dtx_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = dtx_shmem_startup;
}

void
dtx_count(DtxCounter counter)
{
	pg_atomic_fetch_add_u64(&dtx_shared->counters[counter], 1);
}

static void
dtx_registry_on_exit(int code, Datum arg)
{
	dtx_registry_clear();
}

/*
 * dtx_registry_set publishes this backend's global transaction.  The full
 * barrier makes the entry visible before anything this backend sends next
 * (the PREPAREs).
 */
void
dtx_registry_set(FullTransactionId fxid)
{
	int			slot = MyBackendId - 1;

	Assert(slot >= 0 && slot < dtx_shared->nlive);
	if (!dtx_registry_exit_hook)
	{
		before_shmem_exit(dtx_registry_on_exit, (Datum) 0);
		dtx_registry_exit_hook = true;
	}
	dtx_shared->live[slot].dboid = MyDatabaseId;
	pg_write_barrier();
	pg_atomic_write_u64(&dtx_shared->live[slot].fxid,
						U64FromFullTransactionId(fxid));
	pg_memory_barrier();
}

/*
 * dtx_registry_clear withdraws this backend's entry: after phase 2, after
 * an abort, and at exit.
 */
void
dtx_registry_clear(void)
{
	int			slot = MyBackendId - 1;

	if (dtx_shared == NULL || slot < 0 || slot >= dtx_shared->nlive)
		return;
	pg_memory_barrier();
	pg_atomic_write_u64(&dtx_shared->live[slot].fxid, 0);
}

/*
 * dtx_registry_snapshot returns (palloc'd) the full xids of the live global
 * transactions of database dboid, and their number in *n.
 */
uint64 *
dtx_registry_snapshot(Oid dboid, int *n)
{
	uint64	   *out = palloc(sizeof(uint64) * (dtx_shared->nlive + 1));
	int			count = 0;
	int			i;

	pg_memory_barrier();
	for (i = 0; i < dtx_shared->nlive; i++)
	{
		uint64		fxid = pg_atomic_read_u64(&dtx_shared->live[i].fxid);

		pg_read_barrier();
		if (fxid != 0 && dtx_shared->live[i].dboid == dboid)
			out[count++] = fxid;
	}
	*n = count;
	return out;
}

bool
dtx_registry_contains(uint64 *live, int n, uint64 fxid)
{
	int			i;

	for (i = 0; i < n; i++)
		if (live[i] == fxid)
			return true;
	return false;
}

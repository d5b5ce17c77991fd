/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  pg_dtx's shared memory: the registry of live global transactions,
 *	  cluster-wide counters, and the per-database worker slots.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_SHMEM_H
#define DTX_SHMEM_H

#include "access/transam.h"
#include "port/atomics.h"
#include "storage/lwlock.h"

typedef enum DtxCounter
{
	DTX_COUNT_ONE_PHASE,		/* global transactions committed in one phase */
	DTX_COUNT_PREPARED,			/* global transactions that prepared */
	DTX_COUNT_COMMITTED,		/* ... and committed */
	DTX_COUNT_ABORTED,			/* ... and aborted */
	DTX_COUNT_PHASE2_FAILURES,	/* COMMIT/ROLLBACK PREPARED left to recovery */
	DTX_COUNT_RECOVERED_COMMIT, /* prepared transactions committed by recovery */
	DTX_COUNT_RECOVERED_ABORT,	/* ... rolled back by recovery */
	DTX_COUNT_DECISIONS_DELETED,	/* finished decision rows deleted */
	DTX_NCOUNTERS
} DtxCounter;

/* State of the recovery worker of one database */
typedef enum DtxWorkerState
{
	DTX_WORKER_UNKNOWN = 0,		/* not probed yet: start one to find out */
	DTX_WORKER_WANTED,			/* CREATE EXTENSION committed: start now */
	DTX_WORKER_RUNNING,			/* the worker runs (pid) */
	DTX_WORKER_ABSENT,			/* the extension is not installed there */
	DTX_WORKER_DROPPING			/* DROP DATABASE is waiting for it to exit */
} DtxWorkerState;

#define DTX_MAX_WORKERS 64

typedef struct DtxWorkerSlot
{
	Oid			dboid;			/* InvalidOid = free slot */
	DtxWorkerState state;
	int			pid;			/* worker's pid, 0 if none */
	TimestampTz probed_at;		/* last time found ABSENT */
} DtxWorkerSlot;

typedef struct DtxShared
{
	LWLock	   *lock;			/* protects the worker slots */
	uint64		incarnation;	/* random, new at every (re)initialisation of
								 * shared memory: in GIDs and decision rows,
								 * so that a full xid reused after a crash
								 * never matches an older transaction */
	int			launcher_pid;
	pg_atomic_uint64 counters[DTX_NCOUNTERS];
	DtxWorkerSlot workers[DTX_MAX_WORKERS];
	int			nlive;			/* number of live-registry slots */
	struct
	{
		Oid			dboid;
		pg_atomic_uint64 fxid;	/* 0 = none */
	}			live[FLEXIBLE_ARRAY_MEMBER];
} DtxShared;

extern DtxShared *dtx_shared;

extern void dtx_shmem_init(void);
extern void dtx_count(DtxCounter counter);

extern void dtx_registry_set(FullTransactionId fxid);
extern void dtx_registry_clear(void);
extern uint64 *dtx_registry_snapshot(Oid dboid, int *n);
extern bool dtx_registry_contains(uint64 *live, int n, uint64 fxid);

#endif							/* DTX_SHMEM_H */

/*-------------------------------------------------------------------------
 *
 * pg_dtx.c
 *	  Module entry point: _PG_init defines the dtx.* settings and registers
 *	  the transaction callbacks and the hooks.
 *
 * pg_dtx must be loaded through shared_preload_libraries: its background
 * workers and shared memory can only be set up by the postmaster.  Loading
 * it any other way (CREATE EXTENSION or LOAD in a server that did not
 * preload it) is refused with a hint.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/resowner.h"

#include "coordinator.h"
#include "dropguard.h"
#include "fence.h"
#include "lab.h"
#include "lease.h"
#include "outbox.h"
#include "pg_dtx.h"
#include "shmem.h"
#include "twophase.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Settings */
int			dtx_connect_timeout = 10;
int			dtx_cancel_timeout = 5000;
int			dtx_remote_timeout = 30000;
int			dtx_recovery_interval = 10;

/*
 * dtx_try: see pg_dtx.h.  An error raised by ProcessInterrupts (its
 * funcname tells it from a participant's own 57014, which
 * dtx_report_remote_error raises) is re-thrown with ReThrowError once the
 * subtransaction is rolled back, so pg_cancel_backend and statement_timeout
 * end dtx.probe, dtx.in_doubt and dtx.recover instead of being recorded as
 * one participant's error.  Termination is FATAL and never gets here.
 */
ErrorData *
dtx_try(DtxTryFn fn, void *arg)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		if (edata->funcname != NULL &&
			strcmp(edata->funcname, "ProcessInterrupts") == 0)
			ReThrowError(edata);
	}
	PG_END_TRY();
	return edata;
}

void
dtx_check_not_null(FunctionCallInfo fcinfo, int argno, const char *what)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
}

/*
 * The one transaction callback: DDL bookkeeping for the workers, then the
 * remote transactions.
 */
static void
dtx_xact_callback(XactEvent event, void *arg)
{
	dtx_worker_xact_callback(event);
	dtx_outbox_xact_callback(event);
	coord_xact_callback(event);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE)
		dtx_fence_xact_reset();
}

/*
 * The one subtransaction callback: forget the fence checks of an aborted
 * subtransaction (their locks went with it), then the remote savepoints.
 */
static void
dtx_subxact_cb(SubXactEvent event, SubTransactionId mySubid,
			   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		dtx_fence_xact_reset();
	dtx_subxact_callback(event, mySubid, parentSubid, arg);
}

/*
 * _PG_init runs once in the postmaster.  It ERRORs when not loaded from
 * shared_preload_libraries.
 */
void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_dtx must be loaded via shared_preload_libraries"),
				 errhint("Add pg_dtx to shared_preload_libraries in postgresql.conf and restart the server.")));

	DefineCustomIntVariable("dtx.connect_timeout",
							"Time allowed to open a connection to a participant.",
							"A server's own connect_timeout option takes precedence.",
							&dtx_connect_timeout,
							10, 1, 3600,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("dtx.cancel_timeout",
							"Time allowed to a participant to answer a cancel or rollback while a transaction aborts.",
							"After that the connection is closed, which rolls the remote transaction back.",
							&dtx_cancel_timeout,
							5000, 100, 600000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("dtx.remote_timeout",
							"Time allowed to a participant to answer each command of the background worker, dtx.in_doubt, dtx.recover, dtx.probe and the xa_* functions.",
							"A participant that does not answer in time is reported as that participant's error and its connection is closed; the others proceed. 0 waits without limit (statement_timeout and cancels still apply in a backend).",
							&dtx_remote_timeout,
							30000, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("dtx.commit_timeout",
							"Time allowed to participants to answer PREPARE TRANSACTION, COMMIT and COMMIT PREPARED at commit.",
							"A participant that does not answer PREPARE in time aborts the global transaction; phase 2 is then left to recovery. 0 waits forever (phase 2 then uses dtx.cancel_timeout).",
							&dtx_commit_timeout,
							30000, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("dtx.phase2_wait",
							 "Whether COMMIT waits for COMMIT PREPARED on every participant.",
							 "Off: COMMIT returns once the decision is durable; participants finish in the background and other sessions may see the old data for a moment.",
							 &dtx_phase2_wait,
							 true,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("dtx.recovery_interval",
							"Time between two passes of the recovery worker.",
							"0 turns automatic recovery off (dtx.recover() still works).",
							&dtx_recovery_interval,
							10, 0, 86400,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("dtx.fault_point",
							 "Test only: the point of the commit protocol where dtx.fault_action happens.",
							 NULL,
							 &dtx_fault_point,
							 DTX_FAULT_NONE, dtx_fault_point_options,
							 PGC_SUSET, GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);

	DefineCustomEnumVariable("dtx.fault_action",
							 "Test only: what happens at dtx.fault_point: error, crash (SIGKILL of the backend) or pause.",
							 NULL,
							 &dtx_fault_action,
							 DTX_FAULT_ERROR, dtx_fault_action_options,
							 PGC_SUSET, GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("dtx.fault_pause",
							"Test only: how long dtx.fault_action = pause sleeps.",
							NULL,
							&dtx_fault_pause,
							10000, 0, 3600000,
							PGC_SUSET, GUC_UNIT_MS | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);

	dtx_lease_define_gucs();
	dtx_fence_define_gucs();
	dtx_outbox_define_gucs();
	dtx_lab_define_gucs();

	MarkGUCPrefixReserved("dtx");

	dtx_shmem_init();
	dtx_worker_init();
	dtx_launcher_register();
	dtx_dropguard_init();

	RegisterXactCallback(dtx_xact_callback, NULL);
	RegisterSubXactCallback(dtx_subxact_cb, NULL);
}

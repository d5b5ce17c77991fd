/*-------------------------------------------------------------------------
 *
 * pg_dtx.c
 *	  Module entry point: _PG_init defines the dtx.* settings and registers
 *	  the transaction callbacks.
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

#include "coordinator.h"
#include "pg_dtx.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Settings */
int			dtx_connect_timeout = 10;
int			dtx_cancel_timeout = 5000;

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

	MarkGUCPrefixReserved("dtx");

	RegisterXactCallback(dtx_xact_callback, NULL);
	RegisterSubXactCallback(dtx_subxact_callback, NULL);
}

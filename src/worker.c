/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The launcher and the per-database recovery workers.
 *
 * The launcher (a static background worker, connected to no database)
 * keeps one slot per database in shared memory and starts a recovery
 * worker for every database whose slot is UNKNOWN (never probed: new
 * databases, and all of them after a restart) or WANTED (CREATE EXTENSION
 * pg_dtx committed there).  A worker that finds no extension in its
 * database marks the slot ABSENT and exits; a running worker exits when
 * the extension is dropped.  The launcher restarts a worker that died.
 *
 * The utility hook below makes this follow DDL without a restart:
 *	- CREATE EXTENSION pg_dtx: at commit, the slot becomes WANTED and the
 *	  launcher is woken;
 *	- DROP EXTENSION pg_dtx: at commit, the worker is woken, finds the
 *	  extension gone and exits;
 *	- DROP DATABASE, ALTER DATABASE ... RENAME, CREATE DATABASE ... TEMPLATE:
 *	  they need the database to have no other sessions, so the worker is
 *	  stopped first (slot DROPPING) and its slot reset afterwards.
 *
 * Workers use the stock signal handlers: SIGTERM ends them at the next
 * interrupt check (also inside remote waits), SIGHUP reloads the
 * configuration between passes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "pg_dtx.h"
#include "recovery.h"
#include "shmem.h"
#include "lease.h"
#include "outbox.h"
#include "worker.h"

PGDLLEXPORT void dtx_launcher_main(Datum arg);
PGDLLEXPORT void dtx_worker_main(Datum arg);

#define LAUNCHER_NAPTIME_MS 10000
#define LEASE_WATCHDOG_MS 1000
#define WORKER_RESTART_DELAY_MS 5000

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* At commit of this transaction: wake the launcher / this db's worker */
static bool wake_launcher_at_commit = false;
static bool wake_worker_at_commit = false;

/* ----------------------------------------------------------------
 * Slots
 * ----------------------------------------------------------------
 */

/* Caller holds dtx_shared->lock. */
static DtxWorkerSlot *
slot_find(Oid dboid, bool create)
{
	int			i;
	DtxWorkerSlot *free_slot = NULL;

	for (i = 0; i < DTX_MAX_WORKERS; i++)
	{
		DtxWorkerSlot *s = &dtx_shared->workers[i];

		if (s->dboid == dboid)
			return s;
		if (s->dboid == InvalidOid && free_slot == NULL)
			free_slot = s;
	}
	if (!create || free_slot == NULL)
		return NULL;
	memset(free_slot, 0, sizeof(DtxWorkerSlot));
	free_slot->dboid = dboid;
	free_slot->state = DTX_WORKER_UNKNOWN;
	return free_slot;
}

static void
slot_set_state(Oid dboid, DtxWorkerState state)
{
	DtxWorkerSlot *s;

	LWLockAcquire(dtx_shared->lock, LW_EXCLUSIVE);
	s = slot_find(dboid, true);
	if (s)
		s->state = state;
	LWLockRelease(dtx_shared->lock);
}

static void
wake_launcher(void)
{
	int			pid = dtx_shared->launcher_pid;

	if (pid > 0)
		(void) kill(pid, SIGUSR1);
}

/* ----------------------------------------------------------------
 * Common to the launcher and the workers
 * ----------------------------------------------------------------
 */

/*
 * worker_start installs the stock signal handlers (SIGTERM ends the process
 * at the next interrupt check, SIGHUP asks for a reload), connects to
 * database dboid (none if InvalidOid: shared catalogs only) and names the
 * process in pg_stat_activity.
 */
static void
worker_start(Oid dboid, const char *appname)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	if (OidIsValid(dboid))
		BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	else
		BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	/*
	 * The worker runs as the bootstrap superuser in a database whose owner
	 * may have set search_path (ALTER DATABASE ... SET search_path), which
	 * was applied while connecting.  Nothing a database owner controls may
	 * decide which function or operator a superuser process calls: override
	 * it, for the life of the process, with the path PostgreSQL's own
	 * maintenance commands use.  PGC_S_OVERRIDE outranks the database's and
	 * the configuration file's settings, also after a reload.  (Every SQL
	 * string the worker runs is schema-qualified as well.)  Likewise the
	 * worker stays the role it connected as: ALTER DATABASE ... SET role
	 * does not make it act as another role.
	 */
	SetConfigOption("search_path", DTX_SAFE_SEARCH_PATH, PGC_SUSET,
					PGC_S_OVERRIDE);
	SetConfigOption("role", "none", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Settings a database owner may give the database that would stop the
	 * worker's short transactions (every remote wait has its own deadline,
	 * dtx.remote_timeout and friends, and a local cancel now ends a pass
	 * rather than being recorded as one participant's error).
	 */
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET,
					PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET,
					PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname(appname);
}

/* worker_check_signals: exit if asked to, reload the configuration if asked to */
static void
worker_check_signals(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/* ----------------------------------------------------------------
 * Launcher
 * ----------------------------------------------------------------
 */

/* The launcher's handles, parallel to dtx_shared->workers */
static BackgroundWorkerHandle *launcher_handles[DTX_MAX_WORKERS];
static TimestampTz launcher_not_before[DTX_MAX_WORKERS];

static bool
launcher_start_worker(int i, Oid dboid)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_dtx");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "dtx_worker_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_dtx worker for database %u", dboid);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_dtx worker");
	bgw.bgw_main_arg = ObjectIdGetDatum(dboid);
	bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("pg_dtx could not start a recovery worker for database %u", dboid),
				 errhint("Raise max_worker_processes.")));
		return false;
	}
	launcher_handles[i] = handle;
	return true;
}

/*
 * launcher_scan lists the databases and starts the workers that are due.
 */
static void
launcher_scan(void)
{
	Oid		   *dbs;
	int			ndbs = 0;
	int			maxdbs = 16;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	int			i,
				j;
	TimestampTz now;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	dbs = MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * maxdbs);
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (!db->datallowconn || db->datistemplate)
			continue;
		if (ndbs == maxdbs)
		{
			maxdbs *= 2;
			dbs = repalloc(dbs, sizeof(Oid) * maxdbs);
		}
		dbs[ndbs++] = db->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();

	now = GetCurrentTimestamp();
	LWLockAcquire(dtx_shared->lock, LW_EXCLUSIVE);

	/* forget databases that are gone */
	for (i = 0; i < DTX_MAX_WORKERS; i++)
	{
		DtxWorkerSlot *s = &dtx_shared->workers[i];
		bool		exists = false;

		if (s->dboid == InvalidOid)
			continue;
		for (j = 0; j < ndbs; j++)
			if (dbs[j] == s->dboid)
				exists = true;
		if (!exists && s->state != DTX_WORKER_DROPPING && s->pid == 0)
		{
			s->dboid = InvalidOid;
			launcher_handles[i] = NULL;
		}
	}

	for (j = 0; j < ndbs; j++)
	{
		DtxWorkerSlot *s = slot_find(dbs[j], true);
		pid_t		pid;

		if (s == NULL)
			continue;			/* more databases than slots */
		i = s - dtx_shared->workers;

		if (launcher_handles[i] != NULL &&
			GetBackgroundWorkerPid(launcher_handles[i], &pid) == BGWH_STOPPED)
		{
			pfree(launcher_handles[i]);
			launcher_handles[i] = NULL;
			if (s->state == DTX_WORKER_RUNNING)
			{
				/* it died: start it again, after a short delay */
				s->state = DTX_WORKER_WANTED;
				launcher_not_before[i] =
					TimestampTzPlusMilliseconds(now, WORKER_RESTART_DELAY_MS);
			}
		}
		if (launcher_handles[i] != NULL || s->pid != 0)
			continue;
		if (s->state != DTX_WORKER_UNKNOWN && s->state != DTX_WORKER_WANTED)
			continue;
		if (now < launcher_not_before[i])
			continue;
		if (launcher_start_worker(i, s->dboid))
			s->state = DTX_WORKER_RUNNING;
	}
	LWLockRelease(dtx_shared->lock);
	pfree(dbs);
}

void
dtx_launcher_main(Datum arg)
{
	int			i;
	int			rc;
	bool		scan_now = true;
	TimestampTz last_scan = 0;

	worker_start(InvalidOid, "pg_dtx launcher");

	/* recovery or promotion is over: the grace period of leases starts */
	dtx_lease_mark_epoch();

	/* A restarted launcher lost its handles: workers still alive keep going. */
	LWLockAcquire(dtx_shared->lock, LW_EXCLUSIVE);
	dtx_shared->launcher_pid = MyProcPid;
	for (i = 0; i < DTX_MAX_WORKERS; i++)
	{
		DtxWorkerSlot *s = &dtx_shared->workers[i];

		if (s->dboid != InvalidOid && s->pid == 0 &&
			s->state == DTX_WORKER_RUNNING)
			s->state = DTX_WORKER_UNKNOWN;
	}
	LWLockRelease(dtx_shared->lock);

	/*
	 * Scan for databases when woken and every LAUNCHER_NAPTIME_MS; watch
	 * the lease queues every LEASE_WATCHDOG_MS.
	 */
	for (;;)
	{
		TimestampTz now;

		worker_check_signals();
		now = GetCurrentTimestamp();
		if (scan_now || TimestampDifferenceExceeds(last_scan, now, LAUNCHER_NAPTIME_MS))
		{
			launcher_scan();
			last_scan = now;
		}
		dtx_lease_watchdog();
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   LEASE_WATCHDOG_MS, PG_WAIT_EXTENSION);
		scan_now = (rc & WL_LATCH_SET) != 0;
		ResetLatch(MyLatch);
	}
}

/*
 * dtx_launcher_register registers the launcher; from _PG_init.
 */
void
dtx_launcher_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_dtx");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "dtx_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_dtx launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_dtx launcher");
	RegisterBackgroundWorker(&bgw);
}

/* ----------------------------------------------------------------
 * Recovery worker
 * ----------------------------------------------------------------
 */

static void
worker_on_exit(int code, Datum arg)
{
	DtxWorkerSlot *s;

	dtx_outbox_on_exit();
	LWLockAcquire(dtx_shared->lock, LW_EXCLUSIVE);
	s = slot_find(DatumGetObjectId(arg), false);
	if (s && s->pid == MyProcPid)
		s->pid = 0;
	LWLockRelease(dtx_shared->lock);
	wake_launcher();
}

static bool
worker_extension_exists(void)
{
	return OidIsValid(get_extension_oid("pg_dtx", true));
}

void
dtx_worker_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	DtxWorkerSlot *s;
	bool		exists;
	TimestampTz last_recovery = 0;

	worker_start(dboid, "pg_dtx worker");
	pqsignal(SIGTERM, dtx_outbox_sigterm);	/* die(), noting a clean stop */

	LWLockAcquire(dtx_shared->lock, LW_EXCLUSIVE);
	s = slot_find(dboid, true);
	if (s)
		s->pid = MyProcPid;
	LWLockRelease(dtx_shared->lock);
	before_shmem_exit(worker_on_exit, ObjectIdGetDatum(dboid));

	for (;;)
	{
		DtxRecoveryTotals totals;
		TimestampTz now;
		long		sleep_ms;

		worker_check_signals();

		memset(&totals, 0, sizeof(totals));
		now = GetCurrentTimestamp();
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		exists = worker_extension_exists();
		if (exists && dtx_recovery_interval > 0 &&
			TimestampDifferenceExceeds(last_recovery, now, dtx_recovery_interval * 1000))
		{
			pgstat_report_activity(STATE_RUNNING, "resolving in-doubt transactions");
			dtx_recovery_pass(InvalidOid, true, NULL, NULL, &totals, true);
			last_recovery = now;
		}
		CommitTransactionCommand();
		pgstat_report_stat(false);
		pgstat_report_activity(STATE_IDLE, NULL);

		if (!exists)
		{
			/*
			 * ABSENT, unless CREATE EXTENSION committed meanwhile (WANTED):
			 * then the launcher starts a worker again.
			 */
			LWLockAcquire(dtx_shared->lock, LW_EXCLUSIVE);
			s = slot_find(dboid, false);
			if (s && s->state == DTX_WORKER_RUNNING)
				s->state = DTX_WORKER_ABSENT;
			LWLockRelease(dtx_shared->lock);
			proc_exit(0);
		}
		if (totals.committed + totals.rolled_back > 0)
			ereport(LOG,
					(errmsg("pg_dtx recovery: committed %d and rolled back %d prepared transactions; %d decision rows deleted",
							totals.committed, totals.rolled_back, totals.deleted)));

		/* the outbox: dispatch until idle, then sleep until the next due time */
		sleep_ms = dtx_outbox_work();
		if (dtx_recovery_interval > 0)
		{
			long		secs;
			int			usecs;

			TimestampDifference(GetCurrentTimestamp(),
								TimestampTzPlusMilliseconds(last_recovery,
															dtx_recovery_interval * 1000L),
								&secs, &usecs);
			sleep_ms = Min(sleep_ms, secs * 1000L + usecs / 1000 + 1);
		}
		if (sleep_ms > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}

/* ----------------------------------------------------------------
 * DDL that starts and stops workers
 * ----------------------------------------------------------------
 */

/*
 * stop_worker_for stops the worker of database dboid and waits (up to 10 s)
 * for it to exit; the slot stays DROPPING until slot_reset.
 */
static void
stop_worker_for(Oid dboid)
{
	DtxWorkerSlot *s;
	int			pid = 0;
	int			tries;

	if (!OidIsValid(dboid))
		return;
	LWLockAcquire(dtx_shared->lock, LW_EXCLUSIVE);
	s = slot_find(dboid, false);
	if (s)
	{
		s->state = DTX_WORKER_DROPPING;
		pid = s->pid;
	}
	LWLockRelease(dtx_shared->lock);
	if (pid == 0)
		return;
	(void) kill(pid, SIGTERM);
	for (tries = 0; tries < 1000; tries++)
	{
		bool		gone;

		LWLockAcquire(dtx_shared->lock, LW_SHARED);
		s = slot_find(dboid, false);
		gone = (s == NULL || s->pid != pid);
		LWLockRelease(dtx_shared->lock);
		if (gone)
			break;
		pg_usleep(10000L);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
slot_reset(Oid dboid)
{
	if (OidIsValid(dboid))
	{
		slot_set_state(dboid, DTX_WORKER_UNKNOWN);
		wake_launcher();
	}
}

static Oid
createdb_template(CreatedbStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->options)
	{
		DefElem    *d = lfirst(lc);

		if (strcmp(d->defname, "template") == 0 && d->arg != NULL)
			return get_database_oid(defGetString(d), true);
	}
	return InvalidOid;
}

static void
dtx_process_utility(PlannedStmt *pstmt, const char *queryString,
					bool readOnlyTree, ProcessUtilityContext context,
					ParamListInfo params, QueryEnvironment *queryEnv,
					DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *node = pstmt->utilityStmt;
	Oid			stopped = InvalidOid;

	if (IsA(node, DropdbStmt))
		stopped = get_database_oid(((DropdbStmt *) node)->dbname, true);
	else if (IsA(node, RenameStmt) &&
			 ((RenameStmt *) node)->renameType == OBJECT_DATABASE)
		stopped = get_database_oid(((RenameStmt *) node)->subname, true);
	else if (IsA(node, CreatedbStmt))
		stopped = createdb_template((CreatedbStmt *) node);
	else if (IsA(node, CreateExtensionStmt) &&
			 strcmp(((CreateExtensionStmt *) node)->extname, "pg_dtx") == 0)
		wake_launcher_at_commit = true;
	else if (IsA(node, DropStmt) &&
			 ((DropStmt *) node)->removeType == OBJECT_EXTENSION)
		wake_worker_at_commit = true;

	if (OidIsValid(stopped))
		stop_worker_for(stopped);

	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		slot_reset(stopped);
	}
	PG_END_TRY();
}

/*
 * dtx_worker_xact_callback acts on CREATE/DROP EXTENSION once committed.
 */
void
dtx_worker_xact_callback(XactEvent event)
{
	if (event == XACT_EVENT_COMMIT)
	{
		if (wake_launcher_at_commit)
		{
			slot_set_state(MyDatabaseId, DTX_WORKER_WANTED);
			wake_launcher();
		}
		if (wake_worker_at_commit)
		{
			dtx_worker_wake(MyDatabaseId);
		}
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		wake_launcher_at_commit = false;
		wake_worker_at_commit = false;
	}
}

/*
 * dtx_worker_wake sets the latch of database dboid's worker, if it runs.
 */
void
dtx_worker_wake(Oid dboid)
{
	DtxWorkerSlot *s;
	int			pid = 0;

	LWLockAcquire(dtx_shared->lock, LW_SHARED);
	s = slot_find(dboid, false);
	if (s)
		pid = s->pid;
	LWLockRelease(dtx_shared->lock);
	if (pid > 0)
		(void) kill(pid, SIGUSR1);	/* sets its latch */
}

void
dtx_worker_init(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = dtx_process_utility;
}

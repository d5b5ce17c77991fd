/*-------------------------------------------------------------------------
 *
 * twophase.c
 *	  The commit protocol of global transactions.
 *
 * Presumed abort, with the local commit as the decision (the Citus design):
 *
 * PRE_COMMIT (may ERROR, which aborts everything):
 *	- with at most one possible writer (the local database counts), every
 *	  participant gets a plain COMMIT: one phase;
 *	- otherwise the participants whose commands had no writing tag (only
 *	  SELECT, say) are asked, in one parallel round trip, whether their
 *	  transaction has an xid; participants that wrote nothing get COMMIT;
 *	  if only one writer is left in total, it commits in one phase;
 *	- else: the participants' max_prepared_transactions is checked, the
 *	  transaction's full xid is published in the live registry (shmem.c),
 *	  a decision row (fxid, incarnation, writing servers) is inserted into dtx.decisions
 *	  in the local transaction, and PREPARE TRANSACTION goes to every writer
 *	  in parallel.  Every vote is collected, bounded by dtx.commit_timeout
 *	  and interruptible.  The local commit is then forced durable and made
 *	  to wait for synchronous standbys.
 * COMMIT (never ERRORs): COMMIT PREPARED in parallel; failures are WARNINGs
 *	  and left to recovery (the decision row says commit).
 * ABORT (never ERRORs): ROLLBACK PREPARED (or ROLLBACK where the PREPARE
 *	  did not happen); what cannot be reached is left to recovery, which
 *	  finds no decision row and rolls back.
 *
 * The registry entry is withdrawn after phase 2, so recovery never resolves
 * a transaction whose coordinator is still deciding or committing it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "access/xlog.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "dropguard.h"
#include "pg_dtx.h"
#include "shmem.h"
#include "twophase.h"

int			dtx_fault_point = DTX_FAULT_NONE;
int			dtx_fault_action = DTX_FAULT_ERROR;
int			dtx_fault_pause = 10000;
int			dtx_commit_timeout = 30000;
bool		dtx_phase2_wait = true;

const struct config_enum_entry dtx_fault_point_options[] = {
	{"", DTX_FAULT_NONE, false},
	{"none", DTX_FAULT_NONE, true},
	{"before_prepare", DTX_FAULT_BEFORE_PREPARE, false},
	{"after_first_prepare", DTX_FAULT_AFTER_FIRST_PREPARE, false},
	{"after_prepare", DTX_FAULT_AFTER_PREPARE, false},
	{"after_local_commit", DTX_FAULT_AFTER_LOCAL_COMMIT, false},
	{"after_first_commit_prepared", DTX_FAULT_AFTER_FIRST_COMMIT_PREPARED, false},
	{NULL, 0, false}
};

const struct config_enum_entry dtx_fault_action_options[] = {
	{"error", DTX_FAULT_ERROR, false},
	{"crash", DTX_FAULT_CRASH, false},
	{"pause", DTX_FAULT_PAUSE, false},
	{NULL, 0, false}
};

/*
 * State of the current global transaction's two-phase commit, in
 * TopTransactionContext; reset at commit and abort.
 */
static DtxConn **tp_writers = NULL;
static int	tp_nwriters = 0;
static bool tp_registered = false;	/* live registry entry set */
static bool tp_decided = false;		/* all prepared: phase 2 due at COMMIT */

/* ----------------------------------------------------------------
 * GIDs
 * ----------------------------------------------------------------
 */

/*
 * dtx_gid_prefix returns (palloc'd) the prefix of every GID this cluster's
 * database dboid hands out.
 */
char *
dtx_gid_prefix(Oid dboid)
{
	return psprintf("dtx_" UINT64_FORMAT "_%u_", GetSystemIdentifier(), dboid);
}

/*
 * dtx_gid_parse splits a pg_dtx GID; false if gid is not one.
 */
bool
dtx_gid_parse(const char *gid, DtxGid *out)
{
	unsigned long long s,
				inc,
				x;
	unsigned int d,
				u;
	int			part,
				len = 0;

	if (sscanf(gid, "dtx_%llu_%u_%llx_%llu_%u_%d%n",
			   &s, &d, &inc, &x, &u, &part, &len) != 6 ||
		gid[len] != '\0')
		return false;
	out->sysid = (uint64) s;
	out->dboid = (Oid) d;
	out->incarnation = (uint64) inc;
	out->fxid = FullTransactionIdFromU64((uint64) x);
	out->userid = (Oid) u;
	out->participant = part;
	return true;
}

/*
 * dtx_gid_is_ours: gid was handed out by this cluster's current database.
 */
bool
dtx_gid_is_ours(const char *gid, DtxGid *out)
{
	return dtx_gid_parse(gid, out) &&
		out->sysid == GetSystemIdentifier() && out->dboid == MyDatabaseId;
}

/* ----------------------------------------------------------------
 * Fault injection (superuser-only settings, for tests)
 * ----------------------------------------------------------------
 */

/*
 * twophase_fault acts when dtx.fault_point names this point: "error"
 * raises an ERROR before the local commit and, after it, returns true so
 * that the caller skips the rest of phase 2 (left to recovery); "crash"
 * kills this backend with SIGKILL (the postmaster then restarts every
 * backend, as after any crash); "pause" sleeps dtx.fault_pause, so a test
 * can crash a participant or the coordinator at this point.
 */
static bool
twophase_fault(DtxFaultPoint point)
{
	const char *name = NULL;
	const struct config_enum_entry *e;

	if (dtx_fault_point != point || point == DTX_FAULT_NONE)
		return false;
	for (e = dtx_fault_point_options; e->name; e++)
		if (e->val == point && !e->hidden && e->name[0])
			name = e->name;

	switch ((DtxFaultAction) dtx_fault_action)
	{
		case DTX_FAULT_ERROR:
			if (point < DTX_FAULT_AFTER_LOCAL_COMMIT)
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("pg_dtx fault injected at %s", name)));
			ereport(WARNING,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("pg_dtx fault injected at %s: the rest of phase 2 is left to recovery",
							name)));
			return true;
		case DTX_FAULT_CRASH:
			ereport(LOG,
					(errmsg("pg_dtx fault injected at %s: crashing", name)));
			(void) kill(MyProcPid, SIGKILL);
			for (;;)
				pg_usleep(1000000L);
			break;
		case DTX_FAULT_PAUSE:
			{
				TimestampTz end = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															  dtx_fault_pause);
				long		left;

				ereport(LOG,
						(errmsg("pg_dtx fault injected at %s: pausing for %d ms",
								name, dtx_fault_pause)));
				while ((left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), end)) > 0)
				{
					(void) WaitLatch(MyLatch,
									 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
									 left, PG_WAIT_EXTENSION);
					ResetLatch(MyLatch);
					CHECK_FOR_INTERRUPTS();
				}
				return false;
			}
	}
	return false;
}

/* ----------------------------------------------------------------
 * Phase 1
 * ----------------------------------------------------------------
 */

static TimestampTz
twophase_deadline(void)
{
	if (dtx_commit_timeout <= 0)
		return 0;
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), dtx_commit_timeout);
}

/*
 * twophase_wait waits for every answer of conns until deadline; ERROR with
 * the names of the participants that did not answer in time.
 */
static void
twophase_wait(DtxConn **conns, int n, TimestampTz deadline, const char *what)
{
	int			i;

	if (dtx_conn_wait(conns, n, deadline))
		return;
	for (i = 0; i < n; i++)
	{
		if (conns[i]->conn != NULL && PQisBusy(conns[i]->conn))
			ereport(ERROR,
					(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
					 errmsg("participant \"%s\" did not answer %s within dtx.commit_timeout (%d ms)",
							conns[i]->servername, what, dtx_commit_timeout),
					 errdetail("The global transaction is rolled back.")));
	}
}

/*
 * twophase_collect_commit reads the answer to COMMIT on c; ERROR if the
 * participant did not commit.
 */
static void
twophase_collect_commit(DtxConn *c)
{
	PGresult   *res = dtx_conn_collect(c, "COMMIT");

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		dtx_report_remote_error(ERROR, c, res, "COMMIT");
	if (strcmp(PQcmdStatus(res), "COMMIT") != 0)
	{
		PQclear(res);
		c->xact_depth = 0;
		ereport(ERROR,
				(errcode(ERRCODE_TRANSACTION_ROLLBACK),
				 errmsg("participant \"%s\" rolled back its transaction",
						c->servername),
				 errdetail("The remote transaction had failed earlier.")));
	}
	PQclear(res);
	c->xact_depth = 0;
}

/*
 * twophase_commit_one_phase commits conns with a plain COMMIT, in parallel.
 */
static void
twophase_commit_one_phase(DtxConn **conns, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		dtx_conn_send(conns[i], "COMMIT");
	twophase_wait(conns, n, twophase_deadline(), "COMMIT");
	for (i = 0; i < n; i++)
		twophase_collect_commit(conns[i]);
}

/*
 * twophase_learn_writers finds out which participants wrote, into
 * c->remote_wrote: those whose commands had a writing tag (INSERT, UPDATE,
 * ...) did; the others are asked, in one parallel round trip, whether their
 * transaction has an xid.
 */
static void
twophase_learn_writers(DtxConn **parts, int n)
{
	static const char *sql = "SELECT pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL";
	DtxConn   **ask = palloc(sizeof(DtxConn *) * n);
	int			nask = 0;
	int			i;

	/* those that ran INSERT, UPDATE, ... surely wrote: no need to ask */
	for (i = 0; i < n; i++)
		if (!parts[i]->remote_wrote)
			ask[nask++] = parts[i];
	for (i = 0; i < nask; i++)
		dtx_conn_send(ask[i], sql);
	twophase_wait(ask, nask, twophase_deadline(), "at commit");
	for (i = 0; i < nask; i++)
	{
		PGresult   *res = dtx_conn_collect(ask[i], sql);

		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
			dtx_report_remote_error(ERROR, ask[i], res, sql);
		ask[i]->remote_wrote = (strcmp(PQgetvalue(res, 0, 0), "t") == 0);
		PQclear(res);
	}
	pfree(ask);
}

/*
 * twophase_record_decision inserts the decision row (fxid, writing servers,
 * now) into dtx.decisions, in the local transaction: it commits if and only
 * if the local transaction commits.
 */
static void
twophase_record_decision(FullTransactionId fxid, DtxConn **writers, int n)
{
	Oid			nsp = get_namespace_oid("dtx", false);
	Oid			relid = get_relname_relid("decisions", nsp);
	Relation	rel;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	Datum	   *oids = palloc(sizeof(Datum) * n);
	HeapTuple	tup;
	int			i;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table dtx.decisions does not exist"),
				 errhint("Reinstall the extension: DROP EXTENSION pg_dtx; CREATE EXTENSION pg_dtx.")));
	for (i = 0; i < n; i++)
	{
		/* no DROP SERVER between this decision and its resolution */
		dtx_dropguard_lock_server(writers[i]->key.serverid, writers[i]->servername);
		oids[i] = ObjectIdGetDatum(writers[i]->key.serverid);
	}
	values[0] = FullTransactionIdGetDatum(fxid);
	values[1] = Int64GetDatum((int64) dtx_shared->incarnation);
	values[2] = PointerGetDatum(construct_array(oids, n, OIDOID, sizeof(Oid),
												true, TYPALIGN_INT));
	values[3] = TimestampTzGetDatum(GetCurrentTimestamp());

	rel = table_open(relid, RowExclusiveLock);
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	CatalogTupleInsert(rel, tup);
	heap_freetuple(tup);
	table_close(rel, NoLock);
}

/*
 * twophase_send_prepare sends PREPARE TRANSACTION to writers[from..to).
 */
static void
twophase_send_prepare(int from, int to)
{
	int			i;

	for (i = from; i < to; i++)
	{
		char		sql[128];

		snprintf(sql, sizeof(sql), "PREPARE TRANSACTION '%s'", tp_writers[i]->gid);
		dtx_conn_send(tp_writers[i], sql);
	}
}

/*
 * twophase_collect_prepare reads the votes of writers[from..to); ERROR on
 * the first participant that did not prepare (after reading them all).
 */
static void
twophase_collect_prepare(int from, int to)
{
	int			i;
	DtxConn    *failed = NULL;
	PGresult   *failed_res = NULL;

	for (i = from; i < to; i++)
	{
		DtxConn    *c = tp_writers[i];
		PGresult   *res = dtx_conn_collect(c, "PREPARE TRANSACTION");

		if (PQresultStatus(res) == PGRES_COMMAND_OK &&
			strcmp(PQcmdStatus(res), "PREPARE TRANSACTION") == 0)
		{
			c->prepared = true;
			c->xact_depth = 0;
			PQclear(res);
		}
		else if (failed == NULL)
		{
			failed = c;
			failed_res = res;
		}
		else
			PQclear(res);
	}
	if (failed == NULL)
		return;
	if (PQresultStatus(failed_res) != PGRES_COMMAND_OK)
		dtx_report_remote_error(ERROR, failed, failed_res, "PREPARE TRANSACTION");
	PQclear(failed_res);
	ereport(ERROR,
			(errcode(ERRCODE_TRANSACTION_ROLLBACK),
			 errmsg("participant \"%s\" rolled back its transaction instead of preparing it",
					failed->servername),
			 errdetail("The remote transaction had failed earlier.")));
}

/*
 * twophase_force_durable makes the coming local commit flush its WAL and
 * wait for synchronous standbys even if synchronous_commit was lowered:
 * the commit record is the decision, and losing it after phase 2 reached a
 * participant would break atomicity.  The setting is changed for the rest
 * of this transaction only.
 */
static void
twophase_force_durable(void)
{
	ForceSyncCommit();
	if (synchronous_commit < SYNCHRONOUS_COMMIT_REMOTE_FLUSH)
		(void) set_config_option("synchronous_commit", "on",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * twophase_pre_commit ends the remote transactions of parts (the
 * participants with a remote transaction open) at local pre-commit.
 * ERROR here aborts the local transaction and, through twophase_abort and
 * the coordinator's abort path, every participant.
 */
void
twophase_pre_commit(DtxConn **parts, int n)
{
	bool		local_wrote = TransactionIdIsValid(GetTopTransactionIdIfAny());
	DtxConn   **readers;
	int			nreaders = 0;
	int			i;
	FullTransactionId fxid;
	MemoryContext old;
	int			first;

	if (n == 0)
		return;

	/* At most one writer whatever the participants did: one phase. */
	if (n + (local_wrote ? 1 : 0) <= 1)
	{
		twophase_commit_one_phase(parts, n);
		dtx_count(DTX_COUNT_ONE_PHASE);
		return;
	}

	twophase_learn_writers(parts, n);

	old = MemoryContextSwitchTo(TopTransactionContext);
	tp_writers = palloc(sizeof(DtxConn *) * n);
	MemoryContextSwitchTo(old);
	readers = palloc(sizeof(DtxConn *) * n);
	tp_nwriters = 0;
	for (i = 0; i < n; i++)
	{
		if (parts[i]->remote_wrote)
			tp_writers[tp_nwriters++] = parts[i];
		else
			readers[nreaders++] = parts[i];
	}

	if (tp_nwriters + (local_wrote ? 1 : 0) <= 1)
	{
		tp_nwriters = 0;
		twophase_commit_one_phase(parts, n);
		dtx_count(DTX_COUNT_ONE_PHASE);
		return;
	}

	/* Configuration check, before anything is prepared. */
	for (i = 0; i < tp_nwriters; i++)
	{
		if (tp_writers[i]->max_prepared_xacts == 0)
			ereport(ERROR,
					(errcode(ERRCODE_DTX_PARTICIPANT_NO_2PC),
					 errmsg("participant \"%s\" does not allow prepared transactions",
							tp_writers[i]->servername),
					 errdetail("This transaction wrote on %d databases, so it needs two-phase commit, and max_prepared_transactions is 0 on that participant.",
							   tp_nwriters + (local_wrote ? 1 : 0)),
					 errhint("Set max_prepared_transactions on the participant to at least its max_connections (a restart is needed).")));
	}

	/* The decision row; publish the transaction before any PREPARE. */
	fxid = GetTopFullTransactionId();
	dtx_registry_set(fxid);
	tp_registered = true;
	twophase_record_decision(fxid, tp_writers, tp_nwriters);
	for (i = 0; i < tp_nwriters; i++)
		snprintf(tp_writers[i]->gid, sizeof(tp_writers[i]->gid),
				 "dtx_" UINT64_FORMAT "_%u_%" INT64_MODIFIER "x_" UINT64_FORMAT "_%u_%d",
				 GetSystemIdentifier(), MyDatabaseId, dtx_shared->incarnation,
				 U64FromFullTransactionId(fxid), tp_writers[i]->key.userid,
				 i + 1);

	(void) twophase_fault(DTX_FAULT_BEFORE_PREPARE);

	/* Read-only participants commit alongside the votes. */
	for (i = 0; i < nreaders; i++)
		dtx_conn_send(readers[i], "COMMIT");

	first = 0;
	if (dtx_fault_point == DTX_FAULT_AFTER_FIRST_PREPARE)
	{
		twophase_send_prepare(0, 1);
		twophase_wait(tp_writers, 1, twophase_deadline(), "PREPARE TRANSACTION");
		twophase_collect_prepare(0, 1);
		(void) twophase_fault(DTX_FAULT_AFTER_FIRST_PREPARE);
		first = 1;
	}
	twophase_send_prepare(first, tp_nwriters);
	twophase_wait(tp_writers, tp_nwriters, twophase_deadline(), "PREPARE TRANSACTION");
	twophase_collect_prepare(first, tp_nwriters);
	twophase_wait(readers, nreaders, twophase_deadline(), "COMMIT");
	for (i = 0; i < nreaders; i++)
		twophase_collect_commit(readers[i]);
	pfree(readers);

	dtx_count(DTX_COUNT_PREPARED);
	(void) twophase_fault(DTX_FAULT_AFTER_PREPARE);

	twophase_force_durable();
	tp_decided = true;
}

/* ----------------------------------------------------------------
 * Phase 2 and abort
 * ----------------------------------------------------------------
 */

static void
twophase_reset(void)
{
	int			i;

	for (i = 0; i < tp_nwriters; i++)
	{
		/* writers that got no PREPARE are left to the plain abort path */
		if (tp_writers[i]->gid[0] == '\0')
			continue;
		tp_writers[i]->gid[0] = '\0';
		tp_writers[i]->prepared = false;
		tp_writers[i]->xact_depth = 0;
	}
	if (tp_registered)
		dtx_registry_clear();
	tp_writers = NULL;
	tp_nwriters = 0;
	tp_registered = false;
	tp_decided = false;
}

/*
 * twophase_finish runs "<verb> PREPARED" (or ROLLBACK where the PREPARE
 * never happened) on writers[from..to) in parallel.  "Does not exist"
 * counts as done.  Returns the number left to recovery, each reported as a
 * WARNING.  Never ERRORs.
 */
static int
twophase_finish(int from, int to, bool commit)
{
	int			n = to - from;
	DtxConn   **conns;
	char	  **sqls;
	DtxQuietResult *out;
	TimestampTz deadline = twophase_deadline();
	int			left = 0;
	int			i;
	int			m = 0;

	if (n <= 0)
		return 0;
	if (deadline == 0)
		deadline = dtx_cleanup_deadline();
	conns = palloc(sizeof(DtxConn *) * n);
	sqls = palloc(sizeof(char *) * n);
	out = palloc(sizeof(DtxQuietResult) * n);

	for (i = from; i < to; i++)
	{
		DtxConn    *c = tp_writers[i];

		if (c->gid[0] == '\0')
			continue;
		/* an interrupted PREPARE: find out whether it happened */
		if (c->conn != NULL && !dtx_conn_cancel_and_drain(c, deadline))
			c->conn = NULL;		/* closed by cancel_and_drain */
		if (c->conn == NULL)
		{
			left++;
			ereport(WARNING,
					(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
					 errmsg("lost connection to participant \"%s\" before %s PREPARED",
							c->servername, commit ? "COMMIT" : "ROLLBACK"),
					 errdetail("Prepared transaction \"%s\" is left to recovery.", c->gid)));
			continue;
		}
		if (!commit && PQtransactionStatus(c->conn) != PQTRANS_IDLE)
			sqls[m] = pstrdup("ROLLBACK");
		else
			sqls[m] = psprintf("%s PREPARED '%s'", commit ? "COMMIT" : "ROLLBACK",
							   c->gid);
		conns[m++] = c;
	}

	dtx_conn_run_quietly_all(conns, sqls, m, deadline, out);

	for (i = 0; i < m; i++)
	{
		if (out[i].ok || strcmp(out[i].sqlstate, "42704") == 0)
			continue;
		left++;
		ereport(WARNING,
				(errcode(ERRCODE_DTX_PARTICIPANT_UNAVAILABLE),
				 errmsg("could not %s prepared transaction on participant \"%s\"",
						commit ? "commit" : "roll back", conns[i]->servername),
				 errdetail("%s", out[i].message ? out[i].message : "no answer"),
				 errhint("The recovery worker will %s it; dtx.in_doubt shows it meanwhile.",
						 commit ? "commit" : "roll back")));
	}
	return left;
}

/*
 * twophase_post_commit is phase 2, at XACT_EVENT_COMMIT: COMMIT PREPARED on
 * every writer, in parallel.  Interrupts are held here, so every wait has a
 * deadline (dtx.commit_timeout).  Never ERRORs.
 */
void
twophase_post_commit(void)
{
	int			left = 0;
	int			first = 0;

	if (!tp_decided)
	{
		twophase_reset();
		return;
	}

	/*
	 * Without waiting: COMMIT PREPARED is sent and its answer read when the
	 * connection is used next.  Recovery may race it, harmlessly: the
	 * decision is committed and visible, so it would commit too.
	 */
	if (!dtx_phase2_wait && dtx_fault_point == DTX_FAULT_NONE)
	{
		int			i;

		for (i = 0; i < tp_nwriters; i++)
		{
			char		sql[160];

			snprintf(sql, sizeof(sql), "COMMIT PREPARED '%s'", tp_writers[i]->gid);
			dtx_conn_send_detached(tp_writers[i], sql);
		}
		dtx_count(DTX_COUNT_COMMITTED);
		twophase_reset();
		return;
	}

	if (twophase_fault(DTX_FAULT_AFTER_LOCAL_COMMIT))
		left = tp_nwriters;
	else
	{
		if (dtx_fault_point == DTX_FAULT_AFTER_FIRST_COMMIT_PREPARED)
		{
			left += twophase_finish(0, 1, true);
			first = 1;
			if (twophase_fault(DTX_FAULT_AFTER_FIRST_COMMIT_PREPARED))
			{
				left += tp_nwriters - 1;
				first = tp_nwriters;
			}
		}
		left += twophase_finish(first, tp_nwriters, true);
	}
	dtx_count(DTX_COUNT_COMMITTED);
	if (left > 0)
		dtx_count(DTX_COUNT_PHASE2_FAILURES);
	twophase_reset();
}

/*
 * twophase_abort rolls back the prepared (or preparing) writers, at
 * XACT_EVENT_ABORT.  Never ERRORs.  The writers whose PREPARE was never
 * sent are left to the coordinator's abort path (plain ROLLBACK).
 */
void
twophase_abort(void)
{
	int			i;
	bool		any = false;

	for (i = 0; i < tp_nwriters; i++)
		if (tp_writers[i]->gid[0] != '\0')
			any = true;
	if (any)
	{
		if (twophase_finish(0, tp_nwriters, false) > 0)
			dtx_count(DTX_COUNT_PHASE2_FAILURES);
		dtx_count(DTX_COUNT_ABORTED);
	}
	twophase_reset();
}

/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The transactional outbox: dtx.outbox_send() and the dispatcher that
 *	  runs in each database's pg_dtx worker.
 *
 * dtx.outbox_send inserts one row per routed sink into dtx.outbox in the
 * caller's transaction and asks for the worker to be woken when that
 * transaction commits (its latch is set from the commit callback; nothing
 * is sent before commit, and a rolled-back message never existed).
 *
 * The dispatcher works in rounds:
 *	1. claim: one short transaction selects, per sink, up to a batch of
 *	   ready messages with FOR UPDATE SKIP LOCKED -- only the oldest
 *	   message of each key, so that a key is delivered in order and a
 *	   failing key holds back only itself -- and records the attempt in
 *	   dtx.outbox_attempt;
 *	2. send, with no transaction open: one remote INSERT ... ON CONFLICT
 *	   (id) DO NOTHING per postgres sink, every HTTP request of the round
 *	   concurrently through libcurl;
 *	3. record: another short transaction deletes what was delivered,
 *	   reschedules failures with exponential backoff and jitter (or moves
 *	   them to dtx.outbox_dead after the last attempt, or at once when the
 *	   sink rejected them for good), deletes the attempt row and updates
 *	   each sink's circuit breaker.
 * notify sinks are local and transactional: claim, pg_notify and delete
 * commit together in one transaction.
 *
 * An attempt row that is still there when the dispatcher starts (or after
 * it recovered from an ERROR) is an attempt that died with the process.
 * Its messages become suspects, sent alone from then on; a message that
 * dies with the process dtx.outbox_crash_limit times while sent alone is
 * quarantined in dtx.outbox_dead instead of taking the dispatcher down
 * forever.
 *
 * Nothing is read by "id > last seen": ids are taken before commit, so
 * they commit out of order, and each claim looks at the whole (small) hot
 * table through its primary key.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <signal.h>
#include <unistd.h>

#include "access/detoast.h"
#include "access/genam.h"
#include "access/relscan.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/vacuum.h"
#include "executor/tuptable.h"
#include "executor/spi.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "connection.h"
#include "http.h"
#include "option.h"
#include "outbox.h"
#include "pg_dtx.h"
#include "worker.h"

/* Settings */
int			dtx_outbox_max_payload = 1024 * 1024;	/* bytes */
int			dtx_outbox_batch_size = 1000;
int			dtx_outbox_max_attempts = 20;
int			dtx_outbox_backoff_base = 1000; /* ms */
int			dtx_outbox_backoff_max = 300000;	/* ms */
int			dtx_outbox_timeout = 10000; /* ms */
int			dtx_outbox_http_concurrency = 64;
int			dtx_outbox_breaker_threshold = 5;
int			dtx_outbox_breaker_cooldown = 10000;	/* ms */
int			dtx_outbox_crash_limit = 3;
int			dtx_outbox_poll_interval = 5000;	/* ms */
int			dtx_outbox_keep_delivered = 0;	/* seconds */
int			dtx_inbox_retention = 7 * 24 * 3600;	/* seconds */

#define NOTIFY_MAX_PAYLOAD 7999	/* pg_notify's limit is 8000 bytes */

/*
 * Every claim walks the primary key of dtx.outbox from the oldest entry of
 * its sink, dead entries of delivered messages included, until VACUUM
 * removes them; autovacuum wakes up once a minute at best.  After this many
 * deletions the dispatcher vacuums the queue itself (lazy VACUUM, skipped
 * if the table is locked).
 */
#define VACUUM_AFTER_DELETES 50000
#define HOUSEKEEPING_MS 60000

/* Set by outbox_send: wake the dispatcher at commit */
static bool outbox_wake_pending = false;

PG_FUNCTION_INFO_V1(dtx_outbox_send);
PG_FUNCTION_INFO_V1(dtx_outbox_wake);
PG_FUNCTION_INFO_V1(dtx_outbox_key_head);
PG_FUNCTION_INFO_V1(dtx_outbox_on_the_wire);
PG_FUNCTION_INFO_V1(dtx_outbox_among);
PG_FUNCTION_INFO_V1(dtx_inbox_accept);
PG_FUNCTION_INFO_V1(dtx_outbox_check_server);

/* ----------------------------------------------------------------
 * Settings
 * ----------------------------------------------------------------
 */

void
dtx_outbox_define_gucs(void)
{
	DefineCustomIntVariable("dtx.outbox_max_payload",
							"Largest payload plus headers dtx.outbox_send accepts.",
							NULL,
							&dtx_outbox_max_payload,
							1024 * 1024, 1, 256 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.outbox_batch_size",
							"Most messages a sink gets in one round (a sink's batch_size option overrides it).",
							NULL,
							&dtx_outbox_batch_size,
							1000, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.outbox_max_attempts",
							"Attempts at delivering a message before it goes to dtx.outbox_dead (option max_attempts).",
							NULL,
							&dtx_outbox_max_attempts,
							20, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.outbox_backoff_base",
							"Delay before the second attempt; it doubles with each attempt, with jitter (option backoff_base_ms).",
							NULL,
							&dtx_outbox_backoff_base,
							1000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.outbox_backoff_max",
							"Longest delay between two attempts (option backoff_max_ms).",
							NULL,
							&dtx_outbox_backoff_max,
							300000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.outbox_timeout",
							"Time allowed to a sink to accept a batch or an HTTP request (option timeout_ms).",
							NULL,
							&dtx_outbox_timeout,
							10000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.outbox_http_concurrency",
							"HTTP requests in flight at once per http sink (option concurrency).",
							NULL,
							&dtx_outbox_http_concurrency,
							64, 1, 1000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.outbox_breaker_threshold",
							"Consecutive failed rounds that open a sink's circuit breaker (option breaker_threshold).",
							NULL,
							&dtx_outbox_breaker_threshold,
							5, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.outbox_breaker_cooldown",
							"How long an open breaker stays open before one probe message is tried (option breaker_cooldown_ms).",
							NULL,
							&dtx_outbox_breaker_cooldown,
							10000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.outbox_crash_limit",
							"Times a message may take the dispatcher down while sent alone before it is quarantined.",
							NULL,
							&dtx_outbox_crash_limit,
							3, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.outbox_poll_interval",
							"Safety poll for rows queued without dtx.outbox_send (the dispatcher is otherwise woken at commit).",
							NULL,
							&dtx_outbox_poll_interval,
							5000, 10, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.outbox_keep_delivered",
							"How long delivered messages are listed in dtx.outbox_delivered (0: not at all).",
							NULL,
							&dtx_outbox_keep_delivered,
							0, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("dtx.inbox_retention",
							"How long dtx.inbox remembers accepted message ids; keep it longer than the retry horizon of every producer.",
							NULL,
							&dtx_inbox_retention,
							7 * 24 * 3600, 60, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* ----------------------------------------------------------------
 * Producer side
 * ----------------------------------------------------------------
 */

/*
 * The insert of outbox_send.  The function is SECURITY DEFINER: it runs
 * with search_path pg_catalog, pg_temp, and every name is qualified anyway.
 * A topic no route matches is kept under sink 0 until dtx.route_create
 * gives it one.
 */
static const char *send_sql =
"WITH m AS (SELECT pg_catalog.nextval('dtx.outbox_message_id_seq'::pg_catalog.regclass) AS id),"
"     r AS (SELECT DISTINCT sink_id FROM dtx.outbox_route"
"           WHERE $1 OPERATOR(pg_catalog.~~) like_pattern),"
"     t AS (SELECT sink_id FROM r UNION ALL SELECT 0 WHERE NOT EXISTS (SELECT FROM r))"
" INSERT INTO dtx.outbox (message_id, sink_id, topic, key, payload, headers)"
" SELECT m.id, t.sink_id, $1, $2, $3, $4 FROM m, t"
" RETURNING message_id";

static SPIPlanPtr send_plan = NULL;

Datum
dtx_outbox_send(PG_FUNCTION_ARGS)
{
	text	   *topic;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Size		size;
	bool		isnull;
	int64		id;

	dtx_check_not_null(fcinfo, 0, "topic");
	dtx_check_not_null(fcinfo, 1, "payload");
	topic = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(topic) == 0 || VARSIZE_ANY_EXHDR(topic) > 255)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("topic must be 1 to 255 bytes long")));
	if (!PG_ARGISNULL(2) && VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(2)) > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("message key is longer than 1024 bytes")));
	size = toast_raw_datum_size(PG_GETARG_DATUM(1));
	if (!PG_ARGISNULL(3))
		size += toast_raw_datum_size(PG_GETARG_DATUM(3));
	if (size > (Size) dtx_outbox_max_payload)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("message of %zu bytes is larger than dtx.outbox_max_payload (%d bytes)",
						size, dtx_outbox_max_payload)));
	if (!PG_ARGISNULL(3))
	{
		Jsonb	   *h = PG_GETARG_JSONB_P(3);

		if (!JB_ROOT_IS_OBJECT(h) || JB_ROOT_IS_SCALAR(h))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("message headers must be a JSON object")));
	}

	values[0] = PointerGetDatum(topic);
	values[1] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[1] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[2] = PG_GETARG_DATUM(1);
	values[3] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[3] = PG_ARGISNULL(3) ? 'n' : ' ';

	SPI_connect();
	if (send_plan == NULL)
	{
		Oid			types[4] = {TEXTOID, TEXTOID, JSONBOID, JSONBOID};
		SPIPlanPtr	plan = SPI_prepare(send_sql, 4, types);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		send_plan = plan;
	}
	if (SPI_execute_plan(send_plan, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING ||
		SPI_processed < 1)
		elog(ERROR, "could not queue the message");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();

	outbox_wake_pending = true;
	PG_RETURN_INT64(id);
}

Datum
dtx_outbox_wake(PG_FUNCTION_ARGS)
{
	outbox_wake_pending = true;
	PG_RETURN_VOID();
}

/*
 * dtx_outbox_xact_callback wakes this database's worker once a transaction
 * that queued messages has committed (they are visible by then).
 */
void
dtx_outbox_xact_callback(XactEvent event)
{
	if (event == XACT_EVENT_COMMIT && outbox_wake_pending)
		dtx_worker_wake(MyDatabaseId);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		outbox_wake_pending = false;
}

/* ----------------------------------------------------------------
 * Consumer side: dtx.inbox_accept
 * ----------------------------------------------------------------
 */

/*
 * A source belongs to a role: the one that first accepted a message from
 * it, recorded in dtx.inbox_source.  Only roles with the privileges of the
 * owner (its members that inherit, superusers) may accept from it, so that
 * no other role can make a consumer skip a message by accepting its id
 * first.
 */
static const char *inbox_owner_sql =
"SELECT owner::pg_catalog.oid FROM dtx.inbox_source WHERE source OPERATOR(pg_catalog.=) $1";

/* First use: the caller owns it (a concurrent first use waits, then sees the winner's) */
static const char *inbox_claim_sql =
"INSERT INTO dtx.inbox_source AS s (source, owner) VALUES ($1, $2)"
" ON CONFLICT (source) DO UPDATE SET owner = s.owner RETURNING owner::pg_catalog.oid";

static const char *inbox_insert_sql =
"INSERT INTO dtx.inbox (source, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";

static SPIPlanPtr inbox_owner_plan = NULL;
static SPIPlanPtr inbox_claim_plan = NULL;
static SPIPlanPtr inbox_insert_plan = NULL;

/* SPI_execute_plan of a plan kept for the life of the backend */
static void
inbox_run(SPIPlanPtr *plan, const char *sql, Oid type2, Datum *values, int expect)
{
	int			rc;

	if (*plan == NULL)
	{
		Oid			types[2] = {TEXTOID, type2};
		SPIPlanPtr	p = SPI_prepare(sql, 2 - (type2 == InvalidOid), types);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	rc = SPI_execute_plan(*plan, values, NULL, false, 0);
	if (rc != expect)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
}

/* The owner of the function called (its rights are the ones used) */
static Oid
inbox_definer(FunctionCallInfo fcinfo)
{
	Oid		   *owner = (Oid *) fcinfo->flinfo->fn_extra;

	if (owner == NULL)
	{
		HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
		owner = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(Oid));
		*owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
		ReleaseSysCache(tup);
		fcinfo->flinfo->fn_extra = owner;
	}
	return *owner;
}

/*
 * dtx.inbox_accept(message_id text, source text DEFAULT '') -> boolean
 *
 * True the first time (source, message_id) is seen, in the caller's
 * transaction.  Declared SECURITY INVOKER, with search_path pg_catalog,
 * pg_temp: the caller is who it checks against the source's owner, and the
 * tables (not for PUBLIC) are then read and written with the rights of the
 * function's owner, as SECURITY DEFINER would (the user is switched back
 * on return; an ERROR's abort restores it).  22004 for a NULL argument,
 * 42501 when the source belongs to a role whose privileges the caller
 * does not have.  Three plans kept per backend; no other state.
 */
Datum
dtx_inbox_accept(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	Oid			definer;
	Oid			owner;
	Oid			save_userid;
	int			save_sec_context;
	Datum		args[2];
	bool		isnull;
	bool		accepted;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("message id and source must not be null")));
	definer = inbox_definer(fcinfo);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(definer, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	SPI_connect();
	args[0] = PG_GETARG_DATUM(1);
	inbox_run(&inbox_owner_plan, inbox_owner_sql, InvalidOid, args, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		args[1] = ObjectIdGetDatum(caller);
		inbox_run(&inbox_claim_plan, inbox_claim_sql, REGROLEOID, args,
				  SPI_OK_INSERT_RETURNING);
	}
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										   1, &isnull));
	if (owner != caller && !has_privs_of_role(caller, owner))
	{
		char	   *name = GetUserNameFromId(owner, true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for inbox source \"%s\"",
						TextDatumGetCString(PG_GETARG_DATUM(1))),
				 name ? errdetail("The source belongs to role \"%s\".", name)
				 : errdetail("The source belongs to a role that was dropped (OID %u).", owner),
				 errhint("A source belongs to the role that first accepted a message from it; roles with its privileges may use it too. A superuser can hand it over with UPDATE dtx.inbox_source.")));
	}
	args[0] = PG_GETARG_DATUM(1);
	args[1] = PG_GETARG_DATUM(0);
	inbox_run(&inbox_insert_plan, inbox_insert_sql, TEXTOID, args, SPI_OK_INSERT);
	accepted = (SPI_processed == 1);
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec_context);
	PG_RETURN_BOOL(accepted);
}

/* ----------------------------------------------------------------
 * Dispatcher: state
 * ----------------------------------------------------------------
 */

typedef enum SinkKind
{
	SINK_POSTGRES,
	SINK_HTTP,
	SINK_NOTIFY
} SinkKind;

typedef enum Breaker
{
	BREAKER_CLOSED,
	BREAKER_OPEN,
	BREAKER_HALF_OPEN			/* open, cooldown over: one probe allowed */
} Breaker;

static const char *const breaker_names[] = {"closed", "open", "half-open"};

typedef struct Sink
{
	int			id;
	MemoryContext cxt;			/* options below live here */
	char	   *name;
	SinkKind	kind;
	char	   *options;		/* as text, to see changes */
	Oid			owner;
	char	   *url;
	char	  **headers;
	int			nheaders;
	char	   *server;
	char	   *table;			/* quoted, maybe qualified */
	char	   *channel;
	int			timeout_ms;		/* 0 = the setting */
	int			concurrency;
	int			batch_size;
	int			max_attempts;
	int			backoff_base_ms;
	int			backoff_max_ms;
	int			breaker_threshold;
	int			breaker_cooldown_ms;

	/* circuit breaker, saved in dtx.outbox_sink when it changes */
	Breaker		breaker;
	TimestampTz breaker_until;
	int			failures;		/* consecutive failed rounds */
	TimestampTz hold_until;		/* 429 Retry-After: no claims before */
	bool		dirty;
	int64		delivered;		/* this round, to add to the row */
	char	   *last_error;		/* this round (round context) */

	bool		maybe_suspects;
	bool		seen;
	bool		dropped;		/* gone from dtx.outbox_sink, batches pending */
	int			pins;			/* batches that point to this sink */
	struct Batch *sent;			/* postgres: its batch on the wire */
	uint64		last_claim;		/* the round it last claimed something */
	bool		kept_off;		/* its shared connection was taken */
	DtxConn    *conn;			/* postgres: its connection (cache entry) */
	int			remote_pid;		/* postgres: the connection that got our */
	void	   *remote_conn;	/* SET (pid and PGconn) */
} Sink;

typedef enum Outcome
{
	OUT_PENDING,
	OUT_OK,
	OUT_RETRY,					/* reschedule, or dead after max attempts */
	OUT_REJECT					/* dead letter now */
} Outcome;

typedef struct Msg
{
	int64		id;
	int			attempts;
	char	   *topic;
	char	   *key;
	char	   *payload;
	char	   *headers;
	char	   *created_at;
	char	   *envelope;		/* http and notify */

	Outcome		outcome;
	bool		transport;		/* the sink failed, not this message */
	int64		min_delay_ms;	/* Retry-After */
	char	   *error;
} Msg;

typedef struct Batch
{
	MemoryContext cxt;			/* the batch and its messages */
	Sink	   *sink;
	Msg		   *msgs;
	int			n;
	Datum		ids;			/* int8[] of the claimed ids */
	int64		attempt_id;
	DtxConn    *conn;			/* postgres */
	bool		sent;
	bool		solo;			/* a suspect, alone in its round */
	bool		full;			/* claimed as many as the sink may take */
} Batch;

static List *sinks = NIL;		/* of Sink *, in outbox_cxt */
static MemoryContext outbox_cxt = NULL;
static MemoryContext round_cxt = NULL;
static bool need_attempt_recovery = true;
static TimestampTz next_deferred = DT_NOBEGIN;	/* NOBEGIN: not known yet */
static TimestampTz last_housekeeping = 0;
static int64 deleted_since_vacuum = 0;

/*
 * The pipeline (postgres sinks): a batch is claimed and sent in one round,
 * its answer read in the next, and its outcome recorded in the round after
 * that, in the same transaction as that round's claim; so the target works
 * on one batch while the dispatcher records the previous one and claims
 * the next.  Both lists live in outbox_cxt; each batch has its own context.
 */
static List *sent_batches = NIL;	/* on the wire, answer not read */
static List *done_batches = NIL;	/* outcome known, not recorded */
static List *live_batches = NIL;	/* every batch not freed (for an error) */
static uint64 round_no = 0;

/* ----------------------------------------------------------------
 * Dispatcher: SQL
 * ----------------------------------------------------------------
 */

/*
 * The dispatcher runs as the bootstrap superuser, under the search_path of
 * the database, which its owner sets: every function, aggregate, operator,
 * type and table in these statements is schema-qualified, so nothing a
 * non-superuser created can be picked instead (a function "now" or an
 * operator "=" on int4 in a schema ahead of pg_catalog).  Operators are
 * written OPERATOR(pg_catalog.op), which parses as one precedence level for
 * all of them: the parentheses matter.  GREATEST, LEAST, COALESCE, CASE,
 * ORDER BY, DISTINCT and ON CONFLICT take no names from the search_path;
 * BETWEEN, IN, NULLIF and IS DISTINCT FROM do, and are not used.
 */
#define PG_EQ " OPERATOR(pg_catalog.=) "

/*
 * A message with a key is claimed only when it is the oldest of its key.
 * The head is read by dtx._outbox_key_head(), one descent of
 * outbox_key_idx done in C, so no plan can turn it into a walk of the
 * sink's backlog (a subquery's generic plan once read it through the
 * primary key with the key as a filter).
 */
#define CLAIM_WHERE \
	" FROM dtx.outbox o" \
	" WHERE o.sink_id" PG_EQ "$1" \
	"   AND o.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()" \
	"   AND (o.crashes OPERATOR(pg_catalog.>) 0)" PG_EQ "$3" \
	"   AND NOT dtx._outbox_on_the_wire($1, o.message_id)" \
	"   AND (o.key IS NULL OR o.message_id" PG_EQ "dtx._outbox_key_head($1, o.key))" \
	" ORDER BY o.message_id LIMIT $2 FOR UPDATE OF o SKIP LOCKED"

static const char *claim_rows_sql =
"SELECT o.message_id, o.attempts, o.topic, o.key, o.payload::pg_catalog.text,"
"       o.headers::pg_catalog.text, o.created_at::pg_catalog.text" CLAIM_WHERE;

static const char *claim_envelope_sql =
"SELECT o.message_id, o.attempts,"
"       pg_catalog.json_build_object('id', o.message_id, 'topic', o.topic, 'key', o.key,"
"                         'payload', o.payload, 'headers', o.headers,"
"                         'created_at', o.created_at,"
"                         'attempt', o.attempts OPERATOR(pg_catalog.+) 1)::pg_catalog.text"
CLAIM_WHERE;

static const char *attempt_insert_sql =
"INSERT INTO dtx.outbox_attempt (sink_id, message_ids) VALUES ($1, $2) RETURNING attempt_id";

static const char *forget_attempts_sql =
"DELETE FROM dtx.outbox_attempt WHERE attempt_id" PG_EQ "ANY ($1)";

static const char *attempt_delete_sql =
"DELETE FROM dtx.outbox_attempt WHERE attempt_id" PG_EQ "$1";

/* $4 and $5, the least and greatest id, bound the scan */
static const char *success_sql =
"WITH d AS (DELETE FROM dtx.outbox WHERE sink_id" PG_EQ "$1"
"             AND message_id OPERATOR(pg_catalog.>=) $4 AND message_id OPERATOR(pg_catalog.<=) $5"
"             AND dtx._outbox_among(message_id, $2)"
"           RETURNING message_id, topic, key, created_at, attempts)"
" INSERT INTO dtx.outbox_delivered (message_id, sink_id, topic, key, created_at, attempts)"
" SELECT message_id, $1, topic, key, created_at, attempts OPERATOR(pg_catalog.+) 1 FROM d WHERE $3";

/*
 * $3 max attempts (0: all of them die now), $4 error, $5 backoff base ms,
 * $6 backoff cap ms, $7 least delay ms (Retry-After), $8 sink name, $9
 * reason for the dead letters, $10 and $11 the least and greatest id.
 * Returns the earliest next attempt.  The delay is
 * greatest($7, least($6, $5 * 2 ^ least(attempts, 40)) * (0.5 + random() / 2)).
 */
static const char *failure_sql =
"WITH dead AS ("
"   DELETE FROM dtx.outbox o WHERE o.sink_id" PG_EQ "$1"
"      AND o.message_id OPERATOR(pg_catalog.>=) $10 AND o.message_id OPERATOR(pg_catalog.<=) $11"
"      AND dtx._outbox_among(o.message_id, $2)"
"      AND (o.attempts OPERATOR(pg_catalog.+) 1) OPERATOR(pg_catalog.>=) $3 RETURNING o.*),"
" ins AS ("
"   INSERT INTO dtx.outbox_dead AS x (message_id, sink, topic, key, payload, headers,"
"                                created_at, attempts, reason, last_error)"
"   SELECT message_id, $8, topic, key, payload, headers, created_at,"
"          attempts OPERATOR(pg_catalog.+) 1, $9, $4"
"   FROM dead"
"   ON CONFLICT (sink, message_id) DO UPDATE SET topic = excluded.topic, key = excluded.key,"
"      payload = excluded.payload, headers = excluded.headers, attempts = excluded.attempts,"
"      reason = excluded.reason, last_error = excluded.last_error, died_at = pg_catalog.now()"
"   RETURNING 1),"
" upd AS ("
"   UPDATE dtx.outbox o SET attempts = o.attempts OPERATOR(pg_catalog.+) 1, last_error = $4,"
"      next_attempt_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
"        pg_catalog.make_interval(secs => GREATEST($7,"
"          LEAST($6, $5 OPERATOR(pg_catalog.*)"
"                    (2::pg_catalog.float8 OPERATOR(pg_catalog.^) LEAST(o.attempts, 40)))"
"          OPERATOR(pg_catalog.*) (0.5::pg_catalog.float8 OPERATOR(pg_catalog.+)"
"                                  (pg_catalog.random() OPERATOR(pg_catalog./) 2::pg_catalog.float8)))"
"          OPERATOR(pg_catalog./) 1000::pg_catalog.float8)"
"   WHERE o.sink_id" PG_EQ "$1"
"     AND o.message_id OPERATOR(pg_catalog.>=) $10 AND o.message_id OPERATOR(pg_catalog.<=) $11"
"     AND dtx._outbox_among(o.message_id, $2)"
"     AND (o.attempts OPERATOR(pg_catalog.+) 1) OPERATOR(pg_catalog.<) $3"
"   RETURNING o.next_attempt_at)"
" SELECT (SELECT pg_catalog.min(next_attempt_at) FROM upd), (SELECT pg_catalog.count(*) FROM ins)";

/* Attempts that died with the process: suspects, then quarantine ($1 limit) */
static const char *recover_sql =
"WITH a AS (DELETE FROM dtx.outbox_attempt RETURNING sink_id, message_ids),"
"     n AS (SELECT pg_catalog.sum(pg_catalog.cardinality(message_ids)) AS msgs FROM a)"
" UPDATE dtx.outbox o SET crashes = CASE WHEN n.msgs" PG_EQ "1::pg_catalog.int8"
"                                        THEN o.crashes OPERATOR(pg_catalog.+) 1"
"                                        ELSE GREATEST(o.crashes, 1) END"
" FROM a, n WHERE o.sink_id" PG_EQ "a.sink_id AND o.message_id" PG_EQ "ANY (a.message_ids)";

static const char *quarantine_sql =
"WITH q AS (DELETE FROM dtx.outbox o WHERE o.crashes OPERATOR(pg_catalog.>) $1 RETURNING o.*)"
" INSERT INTO dtx.outbox_dead AS x (message_id, sink, topic, key, payload, headers,"
"                              created_at, attempts, reason, last_error)"
" SELECT q.message_id,"
"        COALESCE(s.name, '#' OPERATOR(pg_catalog.||) q.sink_id::pg_catalog.text),"
"        q.topic, q.key, q.payload, q.headers, q.created_at, q.attempts, 'quarantined',"
"        'the dispatcher died ' OPERATOR(pg_catalog.||)"
"          (q.crashes OPERATOR(pg_catalog.-) 1)::pg_catalog.text OPERATOR(pg_catalog.||)"
"          ' times while sending this message alone'"
" FROM q LEFT JOIN dtx.outbox_sink s ON s.sink_id" PG_EQ "q.sink_id"
" ON CONFLICT (sink, message_id) DO UPDATE SET payload = excluded.payload,"
"    reason = excluded.reason, last_error = excluded.last_error, died_at = pg_catalog.now()"
" RETURNING x.message_id, x.sink";

#define OPT(name) "(options OPERATOR(pg_catalog.->>) '" name "')"
#define OPT_INT(name) OPT(name) "::pg_catalog.int4"

static const char *sink_load_sql =
"SELECT sink_id, name, kind, options::pg_catalog.text, owner::pg_catalog.oid, breaker,"
"       breaker_until, failures, " OPT("url") ", " OPT("server") ","
"       (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(p), '.')"
"          FROM pg_catalog.unnest(pg_catalog.parse_ident(" OPT("table") ")) p),"
"       " OPT("channel") ","
"       " OPT_INT("timeout_ms") ", " OPT_INT("concurrency") ","
"       " OPT_INT("batch_size") ", " OPT_INT("max_attempts") ","
"       " OPT_INT("backoff_base_ms") ", " OPT_INT("backoff_max_ms") ","
"       " OPT_INT("breaker_threshold") ", " OPT_INT("breaker_cooldown_ms") ","
"       (SELECT pg_catalog.array_agg(h.key OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) h.value)"
"          FROM pg_catalog.jsonb_each_text(options OPERATOR(pg_catalog.->) 'headers') h)"
" FROM dtx.outbox_sink s ORDER BY sink_id";

static const char *sink_save_sql =
"UPDATE dtx.outbox_sink SET delivered = delivered OPERATOR(pg_catalog.+) $2, failures = $3,"
"       breaker = $4, breaker_until = $5, last_error = COALESCE($6, last_error),"
"       last_error_at = CASE WHEN $6 IS NULL THEN last_error_at ELSE pg_catalog.now() END"
" WHERE sink_id" PG_EQ "$1";

static const char *min_deferred_sql =
"SELECT pg_catalog.min(next_attempt_at) FROM dtx.outbox"
" WHERE next_attempt_at OPERATOR(pg_catalog.>) pg_catalog.now()";

#define OLDER_THAN(col, param) \
	col " OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-)" \
	" pg_catalog.make_interval(secs => " param "))"

static const char *housekeeping_sql =
"WITH i AS (DELETE FROM dtx.inbox WHERE " OLDER_THAN("accepted_at", "$1") " RETURNING 1),"
"     d AS (DELETE FROM dtx.outbox_delivered WHERE " OLDER_THAN("delivered_at", "$2") " RETURNING 1)"
" SELECT (SELECT pg_catalog.count(*) FROM i), (SELECT pg_catalog.count(*) FROM d)";

/* Prepared plans, kept for the life of the worker */
typedef struct PlanSlot
{
	const char *const *sql;
	int			nargs;
	Oid			types[11];
	SPIPlanPtr	plan;
} PlanSlot;

enum
{
	P_CLAIM_ROWS, P_CLAIM_ENVELOPE, P_ATTEMPT_INSERT, P_ATTEMPT_DELETE,
	P_SUCCESS, P_FAILURE, P_RECOVER, P_QUARANTINE, P_SINK_LOAD, P_SINK_SAVE,
	P_MIN_DEFERRED, P_HOUSEKEEPING, P_FORGET_ATTEMPTS, NPLANS
};

static PlanSlot plans[NPLANS] = {
	[P_CLAIM_ROWS] = {&claim_rows_sql, 3, {INT4OID, INT4OID, BOOLOID}},
	[P_CLAIM_ENVELOPE] = {&claim_envelope_sql, 3, {INT4OID, INT4OID, BOOLOID}},
	[P_ATTEMPT_INSERT] = {&attempt_insert_sql, 2, {INT4OID, INT8ARRAYOID}},
	[P_ATTEMPT_DELETE] = {&attempt_delete_sql, 1, {INT8OID}},
	[P_SUCCESS] = {&success_sql, 5, {INT4OID, INT8ARRAYOID, BOOLOID, INT8OID, INT8OID}},
	[P_FAILURE] = {&failure_sql, 11, {INT4OID, INT8ARRAYOID, INT4OID, TEXTOID, FLOAT8OID,
	FLOAT8OID, FLOAT8OID, TEXTOID, TEXTOID, INT8OID, INT8OID}},
	[P_RECOVER] = {&recover_sql, 0},
	[P_QUARANTINE] = {&quarantine_sql, 1, {INT4OID}},
	[P_SINK_LOAD] = {&sink_load_sql, 0},
	[P_SINK_SAVE] = {&sink_save_sql, 6, {INT4OID, INT8OID, INT4OID, TEXTOID, TIMESTAMPTZOID,
	TEXTOID}},
	[P_MIN_DEFERRED] = {&min_deferred_sql, 0},
	[P_HOUSEKEEPING] = {&housekeeping_sql, 2, {FLOAT8OID, FLOAT8OID}},
	[P_FORGET_ATTEMPTS] = {&forget_attempts_sql, 1, {INT8ARRAYOID}},
};

/* run(plan, values, nulls): SPI_execute_plan of a kept plan; ERRORs on failure */
static int
run(int which, Datum *values, const char *nulls)
{
	PlanSlot   *p = &plans[which];
	int			rc;

	if (p->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(*p->sql, p->nargs, p->types);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		p->plan = plan;
	}
	rc = SPI_execute_plan(p->plan, values, nulls, false, 0);
	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return rc;
}

/*
 * Plans are made again every PLAN_REFRESH_MS: a generic plan is made once,
 * with the size the queue had then, and kept until an ANALYZE or VACUUM;
 * one made while the queue was nearly empty (a key's head read through the
 * primary key, say) costs a walk of the whole backlog per row once the
 * queue has grown.  Planning them again costs a few hundred microseconds.
 */
#define PLAN_REFRESH_MS 250
static TimestampTz plans_made_at = 0;

static void
plans_refresh(TimestampTz now)
{
	int			i;

	if (!TimestampDifferenceExceeds(plans_made_at, now, PLAN_REFRESH_MS))
		return;
	for (i = 0; i < NPLANS; i++)
	{
		if (plans[i].plan != NULL)
			SPI_freeplan(plans[i].plan);
		plans[i].plan = NULL;
	}
	plans_made_at = now;
}

static char *
col_text(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

static int
col_int(int row, int col, int dflt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? dflt : DatumGetInt32(d);
}

/*
 * Transactions of the dispatcher: SPI connected, a snapshot pushed.  The
 * memory context of the caller is current again after the commit (a commit
 * leaves TopMemoryContext current, where round data would leak).
 */
static MemoryContext xact_caller_cxt = NULL;

/* A setting for the rest of the current transaction (SET LOCAL) */
static void
local_setting(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

static void
xact_begin(void)
{
	xact_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	/* the dispatcher's own commits need not wait for the WAL flush */
	local_setting("synchronous_commit", "off");

	/*
	 * The queue's statistics are always stale (it fills and drains between
	 * two ANALYZEs): a plan made while it looked small may scan all of it
	 * for every row of a backlog (a seq scan in the per-key subquery), or
	 * for a list of ids (sink_id alone as the index condition, the ids as
	 * a filter), or read the whole queue through the key index and sort
	 * it for every claim.  Its indexes, with every condition in the index
	 * condition and the claim's order taken from the primary key, are
	 * always the right access: generic plans, no seq or bitmap scans, no
	 * sorts.
	 */
	local_setting("plan_cache_mode", "force_generic_plan");
	local_setting("enable_seqscan", "off");
	local_setting("enable_bitmapscan", "off");
	local_setting("enable_sort", "off");
	local_setting("jit", "off");
}

static void
xact_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(xact_caller_cxt);
}

/*
 * A clean stop is not a crash.  The attempts in flight when SIGTERM arrives
 * (fast or smart shutdown, DROP DATABASE) are listed in a file of the data
 * directory as the process exits; the next dispatcher drops their attempt
 * rows instead of counting them as crashes.  A crash writes no file.
 */
#define MAX_INFLIGHT 1024
static int64 inflight[MAX_INFLIGHT];	/* attempt ids between claim and record */
static int	ninflight = 0;
static volatile sig_atomic_t stop_requested = false;

static void
clean_stop_path(char *path)
{
	snprintf(path, MAXPGPATH, "pg_dtx_outbox.%u.stopped", MyDatabaseId);
}

/* SIGTERM handler of the worker: remember it was asked, then die() */
void
dtx_outbox_sigterm(SIGNAL_ARGS)
{
	stop_requested = true;
	die(postgres_signal_arg);
}

/* From the worker's exit callback */
void
dtx_outbox_on_exit(void)
{
	char		path[MAXPGPATH];
	char		tmp[MAXPGPATH + 4];
	FILE	   *f;
	int			i;

	if (!stop_requested || ninflight == 0)
		return;
	clean_stop_path(path);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = AllocateFile(tmp, "w");
	if (f == NULL)
		return;
	for (i = 0; i < ninflight; i++)
		fprintf(f, INT64_FORMAT "\n", inflight[i]);
	if (fflush(f) != 0 || pg_fsync(fileno(f)) != 0)
	{
		FreeFile(f);
		unlink(tmp);
		return;
	}
	FreeFile(f);
	(void) durable_rename(tmp, path, LOG);
}

/*
 * forget_clean_stop drops the attempt rows a clean stop left (inside the
 * recovery transaction); returns true if there was a file, to unlink after
 * the commit.
 */
static bool
forget_clean_stop(void)
{
	char		path[MAXPGPATH];
	FILE	   *f;
	int64		id;
	int			n = 0;
	Datum	   *ids;

	clean_stop_path(path);
	f = AllocateFile(path, "r");
	if (f == NULL)
		return false;
	ids = palloc(sizeof(Datum) * MAX_INFLIGHT);
	while (n < MAX_INFLIGHT && fscanf(f, INT64_FORMAT, &id) == 1)
		ids[n++] = Int64GetDatum(id);
	FreeFile(f);
	if (n > 0)
	{
		Datum		arg = PointerGetDatum(construct_array(ids, n, INT8OID, 8,
														  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));

		run(P_FORGET_ATTEMPTS, &arg, NULL);
		if (SPI_processed > 0)
			ereport(LOG,
					(errmsg("pg_dtx outbox: " UINT64_FORMAT " attempt(s) in flight at the last clean stop will be retried as usual",
							SPI_processed)));
	}
	return true;
}

/* ----------------------------------------------------------------
 * Dispatcher: sinks
 * ----------------------------------------------------------------
 */

static Sink *
sink_find(int id)
{
	ListCell   *lc;

	foreach(lc, sinks)
	{
		Sink	   *s = lfirst(lc);

		if (s->id == id)
			return s;
	}
	return NULL;
}

static char *
cxt_strdup(MemoryContext cxt, const char *s)
{
	return s ? MemoryContextStrdup(cxt, s) : NULL;
}

/*
 * sinks_load reads dtx.outbox_sink (inside a dispatcher transaction): new
 * sinks are added, changed options re-read, dropped sinks forgotten.  The
 * breaker state of a sink already known stays the one in memory.
 */
static void
sinks_load(void)
{
	ListCell   *lc;
	uint64		i;
	List	   *keep = NIL;

	foreach(lc, sinks)
		((Sink *) lfirst(lc))->seen = false;

	run(P_SINK_LOAD, NULL, NULL);
	for (i = 0; i < SPI_processed; i++)
	{
		int			id = col_int(i, 1, 0);
		char	   *options = col_text(i, 4);
		Sink	   *s = sink_find(id);
		char	   *kind;
		bool		isnull;
		Datum		hdrs;

		if (s != NULL && strcmp(s->options, options) == 0)
		{
			s->seen = true;
			continue;
		}
		if (s == NULL)
		{
			char	   *breaker = col_text(i, 6);

			s = MemoryContextAllocZero(outbox_cxt, sizeof(Sink));
			s->id = id;
			s->breaker = strcmp(breaker, "open") == 0 ? BREAKER_OPEN : BREAKER_CLOSED;
			s->breaker_until = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i],
																 SPI_tuptable->tupdesc, 7, &isnull));
			if (isnull)
				s->breaker_until = 0;
			s->failures = col_int(i, 8, 0);
			s->cxt = AllocSetContextCreate(outbox_cxt, "pg_dtx sink", ALLOCSET_SMALL_SIZES);
			s->maybe_suspects = true;	/* the first claim looks */
			sinks = lappend(sinks, s);
		}
		else
			MemoryContextReset(s->cxt);

		s->seen = true;
		s->name = cxt_strdup(s->cxt, col_text(i, 2));
		kind = col_text(i, 3);
		s->kind = strcmp(kind, "postgres") == 0 ? SINK_POSTGRES :
			strcmp(kind, "http") == 0 ? SINK_HTTP : SINK_NOTIFY;
		s->options = cxt_strdup(s->cxt, options);
		s->owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
												  SPI_tuptable->tupdesc, 5, &isnull));
		s->url = cxt_strdup(s->cxt, col_text(i, 9));
		s->server = cxt_strdup(s->cxt, col_text(i, 10));
		s->table = cxt_strdup(s->cxt, col_text(i, 11));
		s->channel = cxt_strdup(s->cxt, col_text(i, 12));
		s->timeout_ms = col_int(i, 13, 0);
		s->concurrency = col_int(i, 14, 0);
		s->batch_size = col_int(i, 15, 0);
		s->max_attempts = col_int(i, 16, 0);
		s->backoff_base_ms = col_int(i, 17, 0);
		s->backoff_max_ms = col_int(i, 18, 0);
		s->breaker_threshold = col_int(i, 19, 0);
		s->breaker_cooldown_ms = col_int(i, 20, 0);
		s->nheaders = 0;
		s->headers = NULL;
		hdrs = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 21, &isnull);
		if (!isnull)
		{
			Datum	   *elems;
			bool	   *enulls;
			int			n,
						j;
			MemoryContext old = MemoryContextSwitchTo(s->cxt);

			deconstruct_array(DatumGetArrayTypeP(hdrs), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, &enulls, &n);
			s->headers = palloc(sizeof(char *) * n);
			for (j = 0; j < n; j++)
				if (!enulls[j])
					s->headers[s->nheaders++] = TextDatumGetCString(elems[j]);
			MemoryContextSwitchTo(old);
		}
	}

	foreach(lc, sinks)
	{
		Sink	   *s = lfirst(lc);

		if (s->seen)
			keep = lappend(keep, s);
		else if (s->pins > 0)
		{
			/* dropped, but batches of it are pending: no more claims */
			s->dropped = true;
			keep = lappend(keep, s);
		}
		else
		{
			MemoryContextDelete(s->cxt);
			pfree(s);
		}
	}
	/* keep lives in the current (round) context: copy it to outbox_cxt */
	{
		MemoryContext old = MemoryContextSwitchTo(outbox_cxt);

		list_free(sinks);
		sinks = list_copy(keep);
		MemoryContextSwitchTo(old);
	}
}

#define SINK_SETTING(s, field, guc) ((s)->field > 0 ? (s)->field : (guc))

/* How many messages the sink may get this round (0: none, breaker or hold) */
static int
sink_allowance(Sink *s, TimestampTz now)
{
	int			n;

	if (s->hold_until > now)
		return 0;
	if (s->breaker == BREAKER_OPEN)
	{
		if (s->breaker_until > now)
			return 0;
		s->breaker = BREAKER_HALF_OPEN;
	}
	if (s->breaker == BREAKER_HALF_OPEN)
		return 1;
	n = SINK_SETTING(s, batch_size, dtx_outbox_batch_size);
	if (s->kind == SINK_HTTP)
		n = Min(n, SINK_SETTING(s, concurrency, dtx_outbox_http_concurrency));
	return n;
}

/*
 * sink_round_result moves the breaker after a round: any delivery closes
 * it; a round where the sink itself failed counts, and opens it at the
 * threshold or when it was a half-open probe.
 */
static void
sink_round_result(Sink *s, bool any_ok, bool sink_failed, const char *error)
{
	TimestampTz now = GetCurrentTimestamp();

	if (error)
		s->last_error = MemoryContextStrdup(round_cxt, error);
	if (any_ok)
	{
		if (s->breaker != BREAKER_CLOSED)
			ereport(LOG,
					(errmsg("pg_dtx outbox: circuit breaker of sink \"%s\" closed", s->name)));
		if (s->breaker != BREAKER_CLOSED || s->failures != 0)
			s->dirty = true;
		s->breaker = BREAKER_CLOSED;
		s->failures = 0;
	}
	else if (sink_failed)
	{
		s->failures++;
		s->dirty = true;
		if (s->breaker == BREAKER_HALF_OPEN ||
			s->failures >= SINK_SETTING(s, breaker_threshold, dtx_outbox_breaker_threshold))
		{
			if (s->breaker == BREAKER_CLOSED)
				ereport(LOG,
						(errmsg("pg_dtx outbox: circuit breaker of sink \"%s\" opened after %d failed rounds",
								s->name, s->failures),
						 errdetail("Last error: %s", error ? error : "?")));
			s->breaker = BREAKER_OPEN;
			s->breaker_until = TimestampTzPlusMilliseconds(now,
														   SINK_SETTING(s, breaker_cooldown_ms, dtx_outbox_breaker_cooldown));
		}
	}
}

/* ----------------------------------------------------------------
 * Dispatcher: claim
 * ----------------------------------------------------------------
 */

static Datum
ids_array(Msg *msgs, int n, bool (*pick) (Msg *), int *count)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			i,
				k = 0;

	for (i = 0; i < n; i++)
		if (pick == NULL || pick(&msgs[i]))
			d[k++] = Int64GetDatum(msgs[i].id);
	if (count)
		*count = k;
	return PointerGetDatum(construct_array(d, k, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * claim_batch selects the sink's next messages (with suspects, its oldest
 * suspect only) and copies them into the round context; the attempt is
 * recorded unless the sink is a notify sink.  Inside a dispatcher
 * transaction.
 */
static Batch *
claim_batch(Sink *s, int limit, bool suspects)
{
	Datum		args[3];
	Batch	   *b;
	uint64		i;
	bool		envelope = (s->kind != SINK_POSTGRES);
	bool		record_attempt = (s->kind != SINK_NOTIFY);
	MemoryContext old;
	MemoryContext cxt;

	args[0] = Int32GetDatum(s->id);
	args[1] = Int32GetDatum(suspects ? 1 : limit);
	args[2] = BoolGetDatum(suspects);
	/* the sink's batch on the wire is still in the table: see on_the_wire */
	run(envelope ? P_CLAIM_ENVELOPE : P_CLAIM_ROWS, args, NULL);
	if (SPI_processed == 0)
	{
		if (suspects)
			s->maybe_suspects = false;
		return NULL;
	}

	cxt = AllocSetContextCreate(outbox_cxt, "pg_dtx outbox batch", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	b = palloc0(sizeof(Batch));
	b->cxt = cxt;
	b->sink = s;
	s->pins++;
	MemoryContextSwitchTo(outbox_cxt);
	live_batches = lappend(live_batches, b);
	MemoryContextSwitchTo(cxt);
	b->solo = suspects;
	b->n = SPI_processed;
	b->msgs = palloc0(sizeof(Msg) * b->n);
	for (i = 0; i < SPI_processed; i++)
	{
		Msg		   *m = &b->msgs[i];
		bool		isnull;

		m->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		m->attempts = col_int(i, 2, 0);
		if (envelope)
			m->envelope = col_text(i, 3);
		else
		{
			m->topic = col_text(i, 3);
			m->key = col_text(i, 4);
			m->payload = col_text(i, 5);
			m->headers = col_text(i, 6);
			m->created_at = col_text(i, 7);
		}
	}
	b->ids = ids_array(b->msgs, b->n, NULL, NULL);
	MemoryContextSwitchTo(old);

	if (record_attempt)
	{
		Datum		a[2];
		bool		isnull;

		a[0] = Int32GetDatum(s->id);
		a[1] = b->ids;
		run(P_ATTEMPT_INSERT, a, NULL);
		b->attempt_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 1, &isnull));
	}
	return b;
}

/* A batch is done with: its memory goes, its sink may go */
static void
batch_free(Batch *b)
{
	live_batches = list_delete_ptr(live_batches, b);
	b->sink->pins--;
	if (b->sink->sent == b)
		b->sink->sent = NULL;
	MemoryContextDelete(b->cxt);
}

/*
 * sink_server finds a postgres sink's server and user mapping as dtx.exec
 * does for the current user: a participant (42704 unknown, 42809 another
 * wrapper), USAGE on it (42501), a user mapping of the user or PUBLIC
 * (42704).  dtx.sink_create checks this for its caller, the worker for the
 * sink's owner before every claim and connection.
 */
static ForeignServer *
sink_server(const char *servername, UserMapping **user)
{
	ForeignServer *server = dtx_get_participant(servername);

	*user = GetUserMapping(GetUserId(), server->serverid);
	return server;
}

/*
 * sink_server_as_owner: sink_server as the sink's owner.  On ERROR the
 * abort of the (sub)transaction sets the user back.
 */
static ForeignServer *
sink_server_as_owner(Sink *s, UserMapping **user)
{
	Oid			save_userid;
	int			save_sec_context;
	ForeignServer *server;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(s->owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	server = sink_server(s->server, user);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return server;
}

/* For dtx_try: the sink's owner may still use its server */
static void
check_sink(void *arg)
{
	UserMapping *user;

	(void) sink_server_as_owner((Sink *) arg, &user);
}

/*
 * dtx._outbox_check_server(server text) -> void
 *
 * dtx.sink_create's check of a postgres sink's server, for the current
 * user (the sink's owner to be): ERRORs as sink_server.
 */
Datum
dtx_outbox_check_server(PG_FUNCTION_ARGS)
{
	UserMapping *user;

	dtx_check_not_null(fcinfo, 0, "server");
	(void) sink_server(text_to_cstring(PG_GETARG_TEXT_PP(0)), &user);
	PG_RETURN_VOID();
}

/* For dtx_try: open (or check) the connection of a postgres sink */
typedef struct ConnectArgs
{
	Sink	   *sink;
	DtxConn    *conn;
} ConnectArgs;

static void
connect_sink(void *arg)
{
	ConnectArgs *a = (ConnectArgs *) arg;
	UserMapping *user;
	ForeignServer *server = sink_server_as_owner(a->sink, &user);

	a->conn = dtx_conn_get(server, user);
	/* its batches stay on the wire across the dispatcher's transactions */
	a->conn->outside_xact = true;

	/*
	 * A delivery is confirmed once the target committed it durably,
	 * whatever the target's default: a new connection gets
	 * synchronous_commit = on before its first batch.
	 */
	if (a->conn->remote_pid != a->sink->remote_pid || a->conn->conn != a->sink->remote_conn)
	{
		dtx_conn_exec_command(a->conn, "SET synchronous_commit = on");
		a->sink->remote_pid = a->conn->remote_pid;
		a->sink->remote_conn = a->conn->conn;
	}
}

/* ----------------------------------------------------------------
 * Dispatcher: send
 * ----------------------------------------------------------------
 */

static void
array_elem(StringInfo buf, const char *v)
{
	const char *p;

	if (buf->len > 1)
		appendStringInfoChar(buf, ',');
	if (v == NULL)
	{
		appendStringInfoString(buf, "NULL");
		return;
	}
	appendStringInfoChar(buf, '"');
	for (p = v; *p;)
	{
		size_t		run = strcspn(p, "\"\\");	/* copy up to the next " or \ */

		appendBinaryStringInfo(buf, p, run);
		p += run;
		if (*p)
		{
			appendStringInfoChar(buf, '\\');
			appendStringInfoChar(buf, *p++);
		}
	}
	appendStringInfoChar(buf, '"');
}

/* The six array parameters of the remote INSERT for msgs[from..to) */
static void
pg_params(Msg *msgs, int from, int to, char **values)
{
	StringInfoData a[6];
	int			i,
				j;

	for (j = 0; j < 6; j++)
	{
		initStringInfo(&a[j]);
		appendStringInfoChar(&a[j], '{');
	}
	for (i = from; i < to; i++)
	{
		char		id[32];

		snprintf(id, sizeof(id), INT64_FORMAT, msgs[i].id);
		array_elem(&a[0], id);
		array_elem(&a[1], msgs[i].topic);
		array_elem(&a[2], msgs[i].key);
		array_elem(&a[3], msgs[i].payload);
		array_elem(&a[4], msgs[i].headers);
		array_elem(&a[5], msgs[i].created_at);
	}
	for (j = 0; j < 6; j++)
	{
		appendStringInfoChar(&a[j], '}');
		values[j] = a[j].data;
	}
}

/*
 * The remote INSERT of a postgres sink.  It runs under the target's
 * search_path, as the sink owner's mapped role: its functions and types are
 * qualified, so that a schema of the target's owner cannot put its own
 * first (the multi-argument unnest() is sugar for ROWS FROM, unqualified
 * only).  The table is the sink's, as given.
 */
static char *
pg_insert_sql(Sink *s)
{
	return psprintf("INSERT INTO %s (id, topic, key, payload, headers, created_at)"
					" SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),"
					" pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[]),"
					" pg_catalog.unnest($4::pg_catalog.jsonb[]), pg_catalog.unnest($5::pg_catalog.jsonb[]),"
					" pg_catalog.unnest($6::pg_catalog.timestamptz[]))"
					" ON CONFLICT (id) DO NOTHING", s->table);
}

/*
 * pg_send sends the remote INSERT of msgs[from..to); false (the connection
 * closed, *error set) if it could not.
 */
static bool
pg_send(Batch *b, int from, int to, char **error)
{
	char	   *values[6];
	MemoryContext old = CurrentMemoryContext;
	volatile bool ok = false;

	pg_params(b->msgs, from, to, values);
	PG_TRY();
	{
		dtx_conn_send_params(b->conn, pg_insert_sql(b->sink), 6, (const char *const *) values);
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		dtx_conn_disconnect(b->conn);
		*error = edata->message;
	}
	PG_END_TRY();
	return ok;
}

typedef enum PgResult
{
	PGR_OK,
	PGR_DATA,					/* the rows were rejected: find which */
	PGR_SINK					/* the sink failed */
} PgResult;

/*
 * pg_finish waits for the answer to pg_send (up to the sink's timeout) and
 * classifies it; *error gets the message of a failure.  Never ERRORs
 * (except on interrupts); a lost or timed-out connection is closed.
 */
static PgResult
pg_finish(Batch *b, char **error)
{
	DtxConn    *c = b->conn;
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   SINK_SETTING(b->sink, timeout_ms, dtx_outbox_timeout));
	PGresult   *res;
	PgResult	outcome = PGR_SINK;
	char		sqlstate[6] = "";

	*error = NULL;
	if (c->conn == NULL)
	{
		*error = "no connection";
		return PGR_SINK;
	}
	if (!dtx_conn_wait(&c, 1, deadline))
	{
		*error = psprintf("no answer from server \"%s\" within %d ms",
						  b->sink->server, SINK_SETTING(b->sink, timeout_ms, dtx_outbox_timeout));
		(void) dtx_conn_cancel_and_drain(c, dtx_cleanup_deadline());
		dtx_conn_disconnect(c);
		return PGR_SINK;
	}
	/* ends on COPY too: the connection is then closed (c->conn NULL) */
	while ((res = dtx_conn_next_result(c, deadline)) != NULL)
	{
		if (PQresultStatus(res) == PGRES_COMMAND_OK && *error == NULL)
			outcome = PGR_OK;
		else if (PQresultStatus(res) == PGRES_FATAL_ERROR && *error == NULL)
		{
			const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
			const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

			strlcpy(sqlstate, st ? st : "", sizeof(sqlstate));
			*error = psprintf("server \"%s\": %s%s%s", b->sink->server,
							  msg ? msg : PQerrorMessage(c->conn),
							  st ? " (SQLSTATE " : "", st ? psprintf("%s)", st) : "");
			outcome = (strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0)
				? PGR_DATA : PGR_SINK;
		}
		PQclear(res);
	}
	c->in_flight = false;
	if (c->conn == NULL || PQstatus(c->conn) != CONNECTION_OK)
	{
		if (*error == NULL)
			*error = psprintf(c->conn == NULL && c->copy_refused
							  ? "server \"%s\" answered with COPY" : "lost connection to server \"%s\"",
							  b->sink->server);
		dtx_conn_disconnect(c);
		return PGR_SINK;
	}
	if (outcome != PGR_OK && *error == NULL)
		*error = psprintf("server \"%s\": %s", b->sink->server, PQerrorMessage(c->conn));
	return outcome;
}

static void set_range(Batch *b, int from, int to, Outcome o, bool transport,
					  const char *error);

static void
set_all(Batch *b, Outcome o, bool transport, const char *error)
{
	set_range(b, 0, b->n, o, transport, error);
}

/* Outcome of msgs[from..to) */
static void
set_range(Batch *b, int from, int to, Outcome o, bool transport, const char *error)
{
	int			i;

	for (i = from; i < to; i++)
	{
		b->msgs[i].outcome = o;
		b->msgs[i].transport = transport;
		b->msgs[i].error = (char *) error;
	}
}

/*
 * pg_bisect finds the rows the target rejects in msgs[from..to), whose
 * insert as a whole was rejected: each half is sent again, and the half
 * that is rejected again is split in turn (a single rejected row costs
 * about 2 log2(n) statements, not n).
 */
static void
pg_bisect(Batch *b, int from, int to, const char *error)
{
	int			mid = from + (to - from) / 2;
	int			half;

	if (to - from == 1)
	{
		set_range(b, from, to, OUT_RETRY, false, error);
		return;
	}
	for (half = 0; half < 2; half++)
	{
		int			lo = half == 0 ? from : mid;
		int			hi = half == 0 ? mid : to;
		char	   *err;
		PgResult	r;

		if (!pg_send(b, lo, hi, &err))
		{
			set_range(b, lo, hi, OUT_RETRY, true, err);
			continue;
		}
		r = pg_finish(b, &err);
		if (r == PGR_OK)
			set_range(b, lo, hi, OUT_OK, false, NULL);
		else if (r == PGR_SINK)
			set_range(b, lo, hi, OUT_RETRY, true, err);
		else
			pg_bisect(b, lo, hi, err);
	}
}

/*
 * pg_collect reads a postgres sink's answer.  When the target rejected the
 * rows (a data or constraint error), the rejected ones are found by
 * bisection and retried; the others are delivered.
 */
static void
pg_collect(Batch *b)
{
	char	   *error;
	PgResult	r;

	r = pg_finish(b, &error);
	if (r == PGR_OK)
		set_all(b, OUT_OK, false, NULL);
	else if (r == PGR_SINK || b->n == 1)
		set_all(b, OUT_RETRY, r == PGR_SINK, error);
	else
		pg_bisect(b, 0, b->n, error);
}

/* Outcome of one HTTP answer */
static void
http_outcome(Msg *m, DtxHttpRequest *r)
{
	m->transport = false;
	m->min_delay_ms = 0;
	if (r->transport_error)
	{
		m->outcome = OUT_RETRY;
		m->transport = true;
		m->error = psprintf("HTTP request failed: %s", r->error);
		return;
	}
	if (r->status >= 200 && r->status < 300)
	{
		m->outcome = OUT_OK;
		return;
	}
	m->error = psprintf("HTTP %ld%s%s", r->status, r->error[0] ? ": " : "", r->error);
	if (r->status >= 400 && r->status < 500 && r->status != 408 && r->status != 429)
		m->outcome = OUT_REJECT;
	else
	{
		m->outcome = OUT_RETRY;
		m->transport = (r->status != 429);
		if (r->retry_after_s > 0)
			m->min_delay_ms = Min(r->retry_after_s, 24 * 3600) * 1000;
	}
}

/* ----------------------------------------------------------------
 * Dispatcher: record outcomes
 * ----------------------------------------------------------------
 */

static bool
is_ok(Msg *m)
{
	return m->outcome == OUT_OK;
}

static int
sink_max_attempts(Sink *s)
{
	return SINK_SETTING(s, max_attempts, dtx_outbox_max_attempts);
}

/* Record the failures among msgs that share m's outcome, error and delay */
static void
record_failures(Batch *b)
{
	Sink	   *s = b->sink;
	bool	   *done = palloc0(sizeof(bool) * b->n);
	Datum	   *ids = palloc(sizeof(Datum) * b->n);
	int			i,
				j;

	for (i = 0; i < b->n; i++)
	{
		Msg		   *m = &b->msgs[i];
		Datum		args[11];
		char		nulls[11] = "           ";
		int			k = 0;
		bool		isnull;
		Datum		d;

		if (done[i] || m->outcome == OUT_OK || m->outcome == OUT_PENDING)
			continue;
		for (j = i; j < b->n; j++)
		{
			Msg		   *o = &b->msgs[j];

			if (!done[j] && o->outcome == m->outcome && o->min_delay_ms == m->min_delay_ms &&
				strcmp(o->error ? o->error : "", m->error ? m->error : "") == 0)
			{
				done[j] = true;
				ids[k++] = Int64GetDatum(o->id);
			}
		}
		args[0] = Int32GetDatum(s->id);
		args[1] = PointerGetDatum(construct_array(ids, k, INT8OID, 8, FLOAT8PASSBYVAL,
												  TYPALIGN_DOUBLE));
		args[2] = Int32GetDatum(m->outcome == OUT_REJECT ? 0 : sink_max_attempts(s));
		args[3] = CStringGetTextDatum(m->error ? m->error : "failed");
		args[4] = Float8GetDatum((double) SINK_SETTING(s, backoff_base_ms, dtx_outbox_backoff_base));
		args[5] = Float8GetDatum((double) SINK_SETTING(s, backoff_max_ms, dtx_outbox_backoff_max));
		args[6] = Float8GetDatum((double) m->min_delay_ms);
		args[7] = CStringGetTextDatum(s->name);
		args[8] = CStringGetTextDatum(m->outcome == OUT_REJECT ? "rejected" : "max attempts");
		/* the ids ascend (the claim's order): their range bounds the scan */
		args[9] = ids[0];
		args[10] = ids[k - 1];
		run(P_FAILURE, args, nulls);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull && (next_deferred == DT_NOEND || DatumGetTimestampTz(d) < next_deferred))
			next_deferred = DatumGetTimestampTz(d);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		if (!isnull && DatumGetInt64(d) > 0)
			ereport(LOG,
					(errmsg("pg_dtx outbox: " INT64_FORMAT " message(s) for sink \"%s\" moved to dtx.outbox_dead (%s)",
							DatumGetInt64(d), s->name,
							m->outcome == OUT_REJECT ? "rejected" : "max attempts"),
					 errdetail("%s", m->error ? m->error : "failed")));
	}
}

/*
 * record_batch writes a batch's outcome (inside a dispatcher transaction)
 * and moves its sink's breaker.
 */
static void
record_batch(Batch *b)
{
	Sink	   *s = b->sink;
	int			nok = 0;
	int			i;
	bool		sink_failed = false;
	const char *error = NULL;

	for (i = 0; i < b->n; i++)
	{
		Msg		   *m = &b->msgs[i];

		if (m->outcome == OUT_PENDING)
		{
			m->outcome = OUT_RETRY;
			m->transport = true;
			m->error = "not sent";
		}
		if (m->outcome == OUT_OK)
			nok++;
		else
		{
			error = m->error;
			if (m->transport)
				sink_failed = true;
			if (m->min_delay_ms > 0)
				s->hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), m->min_delay_ms);
		}
	}
	if (nok > 0)
	{
		Datum		args[5];
		int64		lo = PG_INT64_MAX,
					hi = PG_INT64_MIN;

		for (i = 0; i < b->n; i++)
			if (b->msgs[i].outcome == OUT_OK)
			{
				lo = Min(lo, b->msgs[i].id);
				hi = Max(hi, b->msgs[i].id);
			}
		args[0] = Int32GetDatum(s->id);
		args[1] = (nok == b->n) ? b->ids : ids_array(b->msgs, b->n, is_ok, NULL);
		args[2] = BoolGetDatum(dtx_outbox_keep_delivered > 0);
		/* the range bounds the scan whatever plan the ids get */
		args[3] = Int64GetDatum(lo);
		args[4] = Int64GetDatum(hi);
		run(P_SUCCESS, args, NULL);
		s->delivered += nok;
		deleted_since_vacuum += nok;
	}
	if (nok < b->n)
		record_failures(b);
	if (b->attempt_id > 0)
	{
		Datum		a = Int64GetDatum(b->attempt_id);

		run(P_ATTEMPT_DELETE, &a, NULL);
	}
	sink_round_result(s, nok > 0, sink_failed, error);
}

/* Save the breakers that moved and the delivery counts (in a transaction) */
static void
sinks_save(void)
{
	ListCell   *lc;

	foreach(lc, sinks)
	{
		Sink	   *s = lfirst(lc);
		Datum		args[6];
		char		nulls[6] = "      ";

		if (!s->dirty && s->delivered == 0 && s->last_error == NULL)
			continue;
		args[0] = Int32GetDatum(s->id);
		args[1] = Int64GetDatum(s->delivered);
		args[2] = Int32GetDatum(s->failures);
		args[3] = CStringGetTextDatum(breaker_names[s->breaker == BREAKER_HALF_OPEN
													? BREAKER_OPEN : s->breaker]);
		args[4] = TimestampTzGetDatum(s->breaker_until);
		if (s->breaker == BREAKER_CLOSED)
			nulls[4] = 'n';
		if (s->last_error)
			args[5] = CStringGetTextDatum(s->last_error);
		else
			nulls[5] = 'n';
		run(P_SINK_SAVE, args, nulls);
		s->dirty = false;
		s->delivered = 0;
		s->last_error = NULL;
	}
}

/* ----------------------------------------------------------------
 * Dispatcher: notify sinks (one transaction: claim, notify, delete)
 * ----------------------------------------------------------------
 */

static void
notify_round(Sink *s, int limit, bool *more)
{
	MemoryContext old = CurrentMemoryContext;
	Batch	   *volatile vb = NULL;

	PG_TRY();
	{
		Batch	   *b;
		int			i;

		xact_begin();
		/* notified and deleted in one commit: that one is waited for */
		local_setting("synchronous_commit", "on");
		b = vb = claim_batch(s, limit, false);
		if (b != NULL)
		{
			for (i = 0; i < b->n; i++)
			{
				Msg		   *m = &b->msgs[i];

				if (strlen(m->envelope) > NOTIFY_MAX_PAYLOAD)
				{
					m->outcome = OUT_REJECT;
					m->error = psprintf("message of %zu bytes is larger than NOTIFY allows (8000 bytes)",
										strlen(m->envelope));
				}
				else
				{
					Async_Notify(s->channel, m->envelope);
					m->outcome = OUT_OK;
				}
			}
			record_batch(b);
			*more = true;
		}
		sinks_save();
		xact_commit();
		if (b != NULL)
			batch_free(b);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(round_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(old);
		if (vb != NULL)
			batch_free(vb);
		s->delivered = 0;		/* rolled back */
		sink_round_result(s, false, true, edata->message);
	}
	PG_END_TRY();
}

/* ----------------------------------------------------------------
 * Dispatcher: a round
 * ----------------------------------------------------------------
 */

/* lappend in the round context (inside a transaction, SPI's is current) */
static List *
round_lappend(List *list, void *datum)
{
	MemoryContext old = MemoryContextSwitchTo(round_cxt);

	list = lappend(list, datum);
	MemoryContextSwitchTo(old);
	return list;
}

/*
 * A postgres sink's connection is usable for a claim: open, idle and
 * still valid (a catalog change or a remote restart seen without waiting
 * makes it unusable until connect_sinks opens it again).
 */
static bool
sink_connected(Sink *s)
{
	/*
	 * Sinks on the same server and user share a connection: one busy with
	 * a batch of ours (this sink's or another's) is connected.
	 */
	if (s->sent != NULL || (s->conn != NULL && s->conn->conn != NULL && s->conn->in_flight))
		return true;
	return s->conn != NULL && dtx_conn_usable(s->conn);
}

/*
 * A connection carries one batch at a time: is a batch of this round to be
 * left on it (the batches read in the round are read before the next one
 * is sent)?
 */
static bool
conn_taken(List *batches, DtxConn *c)
{
	ListCell   *lc;

	foreach(lc, batches)
	{
		Batch	   *b = lfirst(lc);

		if (b->conn == c && b->full)
			return true;
	}
	return false;
}

/*
 * Sinks on the same server and user share a connection.  While another of
 * them has work (it claimed in the last round, or was kept off the
 * connection), batches are not left on the wire (each would keep the others
 * off it): they are sent and read in turn, every round.
 */
static bool
conn_shared(Sink *s)
{
	ListCell   *lc;

	foreach(lc, sinks)
	{
		Sink	   *o = lfirst(lc);

		if (o != s && !o->dropped && o->kind == SINK_POSTGRES && o->conn == s->conn &&
			(o->kept_off || o->last_claim + 1 >= round_no))
			return true;
	}
	return false;
}

/*
 * connect_sinks opens the connections the postgres sinks lack, in a
 * transaction of its own (it reads the catalogs), before the claim: no
 * claimed row stays locked while a server is slow to answer.
 */
static void
connect_sinks(TimestampTz now)
{
	ListCell   *lc;
	bool		any = false;

	foreach(lc, sinks)
	{
		Sink	   *s = lfirst(lc);

		if (s->kind == SINK_POSTGRES && !sink_connected(s) && sink_allowance(s, now) > 0)
			any = true;
	}
	if (!any)
		return;
	pgstat_report_activity(STATE_RUNNING, "outbox: connecting to postgres sinks");
	xact_begin();
	foreach(lc, sinks)
	{
		Sink	   *s = lfirst(lc);
		ConnectArgs a = {s, NULL};
		ErrorData  *e;

		if (s->kind != SINK_POSTGRES || sink_connected(s) || sink_allowance(s, now) == 0)
			continue;
		e = dtx_try(connect_sink, &a);
		if (e != NULL)
		{
			s->conn = NULL;
			sink_round_result(s, false, true, e->message);
			FreeErrorData(e);
		}
		else
			s->conn = a.conn;
	}
	xact_commit();
}

/*
 * claim_for claims for a sink (claim_batch); a postgres sink needs its
 * connection (else it waits for the next round's connect_sinks), and its
 * owner must still have USAGE on its server and a user mapping, checked
 * every round as dtx.exec checks every call (a failure is the sink's:
 * recorded in last_error, counted for the breaker; nothing is claimed).
 */
static Batch *
claim_for(Sink *s, int limit, bool suspects, bool *more)
{
	Batch	   *b;
	ErrorData  *e;

	if (s->kind != SINK_POSTGRES)
		return claim_batch(s, limit, suspects);
	if (!sink_connected(s))
	{
		*more = true;			/* connect_sinks, then claim */
		return NULL;
	}
	/* its owner's rights on the server may have gone since it connected */
	if ((e = dtx_try(check_sink, s)) != NULL)
	{
		sink_round_result(s, false, true, e->message);
		FreeErrorData(e);
		return NULL;
	}
	b = claim_batch(s, limit, suspects);
	if (b)
	{
		b->conn = s->conn;
		b->full = !suspects && b->n >= limit && !conn_shared(s);
	}
	return b;
}

/* A batch whose outcome is known, to record at the next round's start */
static void
done_add(Batch *b)
{
	MemoryContext old = MemoryContextSwitchTo(outbox_cxt);

	done_batches = lappend(done_batches, b);
	MemoryContextSwitchTo(old);
}

static void
inflight_add(int64 attempt_id)
{
	if (attempt_id > 0 && ninflight < MAX_INFLIGHT)
		inflight[ninflight++] = attempt_id;
}

/* The round's only batch is a suspect sent alone */
static bool
suspect_round(List *batches)
{
	return batches != NIL && ((Batch *) linitial(batches))->solo;
}

/*
 * outbox_round runs one round over every sink.  Returns true if some sink
 * got a full batch (more may be waiting).
 */
static bool
outbox_round(void)
{
	TimestampTz now = GetCurrentTimestamp();
	List	   *batches = NIL;
	List	   *notify_sinks = NIL;
	ListCell   *lc;
	bool		more = false;
	bool		had_clean_stop = false;
	DtxHttpRequest *reqs;
	Msg		  **req_msgs;
	Batch	  **req_batches;
	int			nreqs = 0;
	int			i;
	bool		drain = false;

	if (next_deferred != DT_NOBEGIN && next_deferred <= now)
		next_deferred = DT_NOEND;
	round_no++;

	/* 0. connections, 1. record the last round's outcomes and claim */
	connect_sinks(now);
	xact_begin();
	if (need_attempt_recovery)
	{
		Datum		limit = Int32GetDatum(dtx_outbox_crash_limit);
		uint64		j;

		had_clean_stop = forget_clean_stop();
		ninflight = 0;
		run(P_RECOVER, NULL, NULL);
		if (SPI_processed > 0)
		{
			ListCell   *l;

			foreach(l, sinks)
				((Sink *) lfirst(l))->maybe_suspects = true;
		}
		if (SPI_processed > 0)
			ereport(LOG,
					(errmsg("pg_dtx outbox: " UINT64_FORMAT " message(s) were being sent when the dispatcher stopped; they are sent alone from now on",
							SPI_processed)));
		run(P_QUARANTINE, &limit, NULL);
		for (j = 0; j < SPI_processed; j++)
			ereport(LOG,
					(errmsg("pg_dtx outbox: message %s for sink \"%s\" quarantined in dtx.outbox_dead: the dispatcher died %d times while sending it",
							col_text(j, 1), col_text(j, 2), dtx_outbox_crash_limit)));
		need_attempt_recovery = false;
	}
	if (next_deferred == DT_NOBEGIN)
	{
		bool		isnull;
		Datum		d;

		run(P_MIN_DEFERRED, NULL, NULL);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		next_deferred = isnull ? DT_NOEND : DatumGetTimestampTz(d);
	}
	sinks_load();
	foreach(lc, done_batches)
		record_batch((Batch *) lfirst(lc));
	now = GetCurrentTimestamp();

	/*
	 * Suspects go first, one message in the whole round: if the worker
	 * dies again, the attempt left behind names that message alone.  So
	 * nothing else may be on the wire: with a batch still there, this
	 * round claims nothing, and the next one (the pipeline empty) does.
	 */
	foreach(lc, sinks)
	{
		Sink	   *s = lfirst(lc);
		Batch	   *b;

		if (!s->maybe_suspects || s->dropped || s->kind == SINK_NOTIFY ||
			sink_allowance(s, now) == 0)
			continue;
		if (sent_batches != NIL)
		{
			drain = true;
			more = true;
			break;
		}
		b = claim_for(s, 1, true, &more);
		if (b != NULL)
		{
			batches = round_lappend(batches, b);
			more = true;
			break;
		}
	}
	foreach(lc, sinks)
	{
		Sink	   *s = lfirst(lc);
		int			limit;
		Batch	   *b;

		if (drain || suspect_round(batches) || s->dropped)
			continue;
		/* with a batch on the wire, only a healthy sink gets the next */
		if (s->sent != NULL && s->breaker != BREAKER_CLOSED)
			continue;
		limit = sink_allowance(s, now);
		if (limit == 0)
			continue;
		if (s->kind == SINK_NOTIFY)
		{
			notify_sinks = round_lappend(notify_sinks, s);
			continue;
		}
		if (s->kind == SINK_POSTGRES && s->conn != NULL && conn_taken(batches, s->conn))
		{
			more = true;		/* its connection is another sink's this round */
			s->kept_off = true;
			continue;
		}
		s->kept_off = false;	/* it has its turn now */
		b = claim_for(s, limit, false, &more);
		if (b == NULL)
			continue;
		s->last_claim = round_no;

		/*
		 * Another round right away: a full batch leaves more behind, and
		 * a delivered key head lets the next message of its key go.
		 */
		more = true;
		batches = round_lappend(batches, b);
	}
	sinks_save();

	/*
	 * The attempt rows must survive a crash of this process (that is how a
	 * message that crashes it is found): this commit is flushed.
	 */
	if (batches != NIL)
		local_setting("synchronous_commit", "on");
	xact_commit();
	if (had_clean_stop)
	{
		char		path[MAXPGPATH];

		clean_stop_path(path);
		(void) unlink(path);
	}
	/* recorded: those batches are done with */
	foreach(lc, done_batches)
		batch_free((Batch *) lfirst(lc));
	list_free(done_batches);
	done_batches = NIL;
	ninflight = 0;
	foreach(lc, sent_batches)
		inflight_add(((Batch *) lfirst(lc))->attempt_id);
	foreach(lc, batches)
		inflight_add(((Batch *) lfirst(lc))->attempt_id);

	/* 2. notify sinks: their own transactions */
	foreach(lc, notify_sinks)
	{
		Sink	   *s = lfirst(lc);

		notify_round(s, sink_allowance(s, now), &more);
	}

	/* 3. the answers to last round's batches */
	foreach(lc, sent_batches)
	{
		Batch	   *b = lfirst(lc);
		MemoryContext old = MemoryContextSwitchTo(b->cxt);

		pgstat_report_activity(STATE_RUNNING, "outbox: waiting for a postgres sink");
		pg_collect(b);
		MemoryContextSwitchTo(old);
		b->sink->sent = NULL;
		done_add(b);
	}
	list_free(sent_batches);
	sent_batches = NIL;

	/* 4. send this round's batches, no transaction open */
	foreach(lc, batches)
	{
		Batch	   *b = lfirst(lc);
		MemoryContext old;
		char	   *error;

		if (b->sink->kind != SINK_POSTGRES)
		{
			nreqs += b->n;
			continue;
		}
		old = MemoryContextSwitchTo(b->cxt);
		b->sent = pg_send(b, 0, b->n, &error);
		if (!b->sent)
			set_all(b, OUT_RETRY, true, error);
		else if (!b->full)
		{
			/*
			 * Only a full batch is left on the wire (a backlog: the next
			 * claim has work to overlap with).  A partial one (a suspect,
			 * a quiet queue, keys waiting for their heads) is read and
			 * recorded in this round, so the next messages of its keys can
			 * go in the next.
			 */
			pg_collect(b);
		}
		MemoryContextSwitchTo(old);
		if (b->sent && b->full)
		{
			MemoryContext o = MemoryContextSwitchTo(outbox_cxt);

			b->sink->sent = b;
			sent_batches = lappend(sent_batches, b);
			MemoryContextSwitchTo(o);
		}
		else
			done_add(b);
	}
	reqs = palloc0(sizeof(DtxHttpRequest) * Max(nreqs, 1));
	req_msgs = palloc0(sizeof(Msg *) * Max(nreqs, 1));
	req_batches = palloc0(sizeof(Batch *) * Max(nreqs, 1));
	nreqs = 0;
	foreach(lc, batches)
	{
		Batch	   *b = lfirst(lc);
		Sink	   *s = b->sink;

		if (s->kind != SINK_HTTP)
			continue;
		for (i = 0; i < b->n; i++)
		{
			DtxHttpRequest *r = &reqs[nreqs];

			r->url = s->url;
			r->headers = (const char *const *) s->headers;
			r->nheaders = s->nheaders;
			r->body = b->msgs[i].envelope;
			r->body_len = strlen(b->msgs[i].envelope);
			r->message_id = b->msgs[i].id;
			r->timeout_ms = SINK_SETTING(s, timeout_ms, dtx_outbox_timeout);
			req_batches[nreqs] = b;
			req_msgs[nreqs++] = &b->msgs[i];
		}
		done_add(b);
	}
	if (nreqs > 0)
	{
		pgstat_report_activity(STATE_RUNNING, "outbox: HTTP requests in flight");
		dtx_http_perform(reqs, nreqs);
		for (i = 0; i < nreqs; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(req_batches[i]->cxt);

			http_outcome(req_msgs[i], &reqs[i]);
			MemoryContextSwitchTo(old);
		}
	}

	/*
	 * With a batch on the wire, the outcomes are recorded at the start of
	 * the next round, with its claim; else now.
	 */
	if (sent_batches == NIL && done_batches != NIL)
	{
		xact_begin();
		foreach(lc, done_batches)
			record_batch((Batch *) lfirst(lc));
		sinks_save();
		xact_commit();
		foreach(lc, done_batches)
			batch_free((Batch *) lfirst(lc));
		list_free(done_batches);
		done_batches = NIL;
		ninflight = 0;
	}
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return more || sent_batches != NIL || done_batches != NIL;
}

/*
 * After an error: batches on the wire are abandoned with their connections,
 * and no outcome is recorded (the attempts left behind make their messages
 * suspects, sent alone again).
 */
static void
pipeline_abandon(void)
{
	ListCell   *lc;

	foreach(lc, sent_batches)
	{
		Batch	   *b = lfirst(lc);

		if (b->conn != NULL)
			dtx_conn_disconnect(b->conn);
	}
	list_free(sent_batches);
	list_free(done_batches);
	sent_batches = done_batches = NIL;
	/* every batch, also those the error caught between two lists */
	while (live_batches != NIL)
		batch_free((Batch *) linitial(live_batches));
}

/* VACUUM dtx.outbox, from the worker's loop (no transaction open) */
static void
outbox_vacuum(void)
{
	VacuumParams params;
	MemoryContext old = CurrentMemoryContext;
	List	   *rels;

	memset(&params, 0, sizeof(params));
	params.options = VACOPT_VACUUM | VACOPT_SKIP_LOCKED;
	params.freeze_min_age = -1;
	params.freeze_table_age = -1;
	params.multixact_freeze_min_age = -1;
	params.multixact_freeze_table_age = -1;
	params.is_wraparound = false;
	params.log_min_duration = -1;
	params.index_cleanup = VACOPTVALUE_ENABLED;
	params.truncate = VACOPTVALUE_DISABLED; /* no exclusive lock */
	params.nworkers = -1;

	pgstat_report_activity(STATE_RUNNING, "outbox: VACUUM dtx.outbox");
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	MemoryContextSwitchTo(round_cxt);
	rels = list_make1(makeVacuumRelation(makeRangeVar("dtx", "outbox", -1), InvalidOid, NIL));
	vacuum(rels, &params, NULL, true);
	CommitTransactionCommand();
	MemoryContextSwitchTo(old);
	pgstat_report_activity(STATE_IDLE, NULL);
}

static void
outbox_housekeeping(void)
{
	Datum		args[2];

	xact_begin();
	args[0] = Float8GetDatum((double) dtx_inbox_retention);
	args[1] = Float8GetDatum((double) dtx_outbox_keep_delivered);
	run(P_HOUSEKEEPING, args, NULL);
	xact_commit();
}

/*
 * dtx_outbox_work runs dispatch rounds while sinks have full batches (at
 * most a few, then it returns to let the worker check its other duties)
 * and returns how long the worker may sleep, in ms.  An ERROR is logged,
 * the transaction rolled back, and the dispatcher resumes after a pause
 * (the attempts it left are then counted as crashes).
 */
long
dtx_outbox_work(void)
{
	MemoryContext old = CurrentMemoryContext;
	volatile long sleep_ms = dtx_outbox_poll_interval;
	TimestampTz now;

	if (outbox_cxt == NULL)
	{
		outbox_cxt = AllocSetContextCreate(TopMemoryContext, "pg_dtx outbox",
										   ALLOCSET_DEFAULT_SIZES);
		round_cxt = AllocSetContextCreate(outbox_cxt, "pg_dtx outbox round",
										  ALLOCSET_DEFAULT_SIZES);

		/*
		 * created_at goes to postgres sinks as text, which the target reads
		 * in ISO (DTX_SESSION_SETUP_SQL): ISO here too, whatever DateStyle
		 * the database's owner set ('SQL, DMY' turned 4 December into 12
		 * April at the target).
		 */
		SetConfigOption("datestyle", "ISO", PGC_SUSET, PGC_S_OVERRIDE);
	}

	PG_TRY();
	{
		int			rounds;
		bool		more = false;

		for (rounds = 0; rounds < 16; rounds++)
		{
			plans_refresh(GetCurrentTimestamp());
			MemoryContextSwitchTo(round_cxt);
			more = outbox_round();
			MemoryContextSwitchTo(old);
			MemoryContextReset(round_cxt);
			CHECK_FOR_INTERRUPTS();
			if (!more)
				break;
		}
		if (deleted_since_vacuum >= VACUUM_AFTER_DELETES)
		{
			deleted_since_vacuum = 0;
			MemoryContextSwitchTo(round_cxt);
			outbox_vacuum();
			MemoryContextSwitchTo(old);
			MemoryContextReset(round_cxt);
		}
		now = GetCurrentTimestamp();
		if (TimestampDifferenceExceeds(last_housekeeping, now, HOUSEKEEPING_MS))
		{
			MemoryContextSwitchTo(round_cxt);
			outbox_housekeeping();
			MemoryContextSwitchTo(old);
			MemoryContextReset(round_cxt);
			last_housekeeping = now;
		}
		if (more)
			sleep_ms = 0;
		else
		{
			ListCell   *lc;
			TimestampTz wake = TimestampTzPlusMilliseconds(now, dtx_outbox_poll_interval);

			if (next_deferred != DT_NOBEGIN && next_deferred != DT_NOEND && next_deferred < wake)
				wake = next_deferred;
			foreach(lc, sinks)
			{
				Sink	   *s = lfirst(lc);

				if (s->breaker == BREAKER_OPEN && s->breaker_until < wake)
					wake = s->breaker_until;
				if (s->hold_until > now && s->hold_until < wake)
					wake = s->hold_until;
			}
			sleep_ms = (long) ((wake - now) / 1000) + 1;
			if (sleep_ms < 1)
				sleep_ms = 1;
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		dtx_http_abandon();
		pipeline_abandon();
		MemoryContextReset(round_cxt);
		{
			ListCell   *lc;

			foreach(lc, sinks)
			{
				Sink	   *s = lfirst(lc);

				s->last_error = NULL;	/* was in round_cxt */
				s->delivered = 0;	/* rolled back */
				s->dirty = true;
			}
		}
		need_attempt_recovery = true;
		sleep_ms = 1000;
	}
	PG_END_TRY();
	return sleep_ms;
}

/*
 * dtx._outbox_key_head(sink_id int, key text) -> bigint
 *
 * The oldest message_id of a key in a sink that the current snapshot sees,
 * read straight from outbox_key_idx: one descent of the index, whatever
 * the planner would have chosen.  (As a subquery, a generic plan made on a
 * nearly empty queue read the head through the primary key with the key as
 * a filter: a walk of the sink's whole backlog per claimed row.)
 */
typedef struct KeyHeadRels
{
	Oid			heap;
	Oid			index;
} KeyHeadRels;

Datum
dtx_outbox_key_head(PG_FUNCTION_ARGS)
{
	KeyHeadRels *rels = (KeyHeadRels *) fcinfo->flinfo->fn_extra;
	int32		sink_id = PG_GETARG_INT32(0);
	text	   *key = PG_GETARG_TEXT_PP(1);
	Relation	heap;
	Relation	index;
	ScanKeyData skey[2];
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		found = false;
	int64		head = 0;

	if (rels == NULL)
	{
		Oid			nsp = get_namespace_oid("dtx", false);

		rels = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(KeyHeadRels));
		rels->heap = get_relname_relid("outbox", nsp);
		rels->index = get_relname_relid("outbox_key_idx", nsp);
		if (!OidIsValid(rels->heap) || !OidIsValid(rels->index))
			elog(ERROR, "dtx.outbox or dtx.outbox_key_idx is missing");
		fcinfo->flinfo->fn_extra = rels;
	}
	heap = table_open(rels->heap, AccessShareLock);
	index = index_open(rels->index, AccessShareLock);
	ScanKeyEntryInitialize(&skey[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], F_INT4EQ, Int32GetDatum(sink_id));
	ScanKeyEntryInitialize(&skey[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[1], F_TEXTEQ, PointerGetDatum(key));
	scan = index_beginscan(heap, index, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, skey, 2, NULL, 0);
	slot = table_slot_create(heap, NULL);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;

		head = DatumGetInt64(slot_getattr(slot, 1, &isnull));
		found = !isnull;
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_INT64(head);
}

/*
 * dtx._outbox_on_the_wire(sink_id int, message_id bigint) -> boolean
 *
 * Whether the message is in the sink's batch on the wire, which the
 * claim must not take again although its rows are still in dtx.outbox:
 * a binary search of this process's batch (its ids ascend, in the claim's
 * order).  Outside the dispatcher, nothing is on the wire: false.  (As
 * "message_id <> ALL ($n)" in a generic plan, it cost one comparison per
 * batch element for every row the claim read.)
 */
Datum
dtx_outbox_on_the_wire(PG_FUNCTION_ARGS)
{
	Sink	   *s = outbox_cxt != NULL ? sink_find(PG_GETARG_INT32(0)) : NULL;
	int64		id = PG_GETARG_INT64(1);
	Batch	   *b;
	int			lo,
				hi;

	if (s == NULL || (b = s->sent) == NULL)
		PG_RETURN_BOOL(false);
	lo = 0;
	hi = b->n - 1;
	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (b->msgs[mid].id == id)
			PG_RETURN_BOOL(true);
		if (b->msgs[mid].id < id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	PG_RETURN_BOOL(false);
}

/*
 * dtx._outbox_among(message_id bigint, ids bigint[]) -> boolean
 *
 * Whether message_id is in ids, which ascend and have no nulls (a batch's
 * ids, in the claim's order): a binary search, where "= ANY (ids)" in a
 * generic plan compares with every element for each row.
 */
Datum
dtx_outbox_among(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(1);
	int			n = ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
	const int64 *v = (const int64 *) ARR_DATA_PTR(a);
	int			lo = 0,
				hi = n - 1;

	if (ARR_ELEMTYPE(a) != INT8OID || ARR_HASNULL(a))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ids must be a bigint array without nulls")));
	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (v[mid] == id)
			PG_RETURN_BOOL(true);
		if (v[mid] < id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	PG_RETURN_BOOL(false);
}

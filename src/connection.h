/*-------------------------------------------------------------------------
 *
 * connection.h
 *	  pg_dtx's connections to participants: a per-backend cache keyed by
 *	  (server, user), interruptible libpq I/O, remote error translation.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_CONNECTION_H
#define DTX_CONNECTION_H

#include "foreign/foreign.h"
#include "libpq-fe.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

typedef struct DtxConnKey
{
	Oid			serverid;
	Oid			userid;
} DtxConnKey;

/*
 * One cached connection.  Entries live in a hash table in CacheMemoryContext
 * and are never removed, so pointers to them stay valid for the life of the
 * backend; a closed connection has conn == NULL.
 */
typedef struct DtxConn
{
	DtxConnKey	key;			/* hash key, must be first */
	PGconn	   *conn;			/* NULL when not connected */
	char		servername[NAMEDATALEN];
	int			remote_pid;		/* participant backend's pid */

	/*
	 * Remote transaction nesting: 0 = no remote transaction, 1 = a remote
	 * transaction is open, n > 1 = savepoints s2..sn are open, mirroring
	 * local subtransaction levels.
	 */
	int			xact_depth;
	bool		in_flight;		/* a command was sent and its results are
								 * not all read: the state is unknown if we
								 * got here by an ERROR */
	bool		state_unknown;	/* the remote transaction can no longer be
								 * trusted: refuse to commit, then discard */
	bool		invalidated;	/* server or user mapping changed */
	int			max_prepared_xacts; /* participant's max_prepared_transactions */
	bool		remote_wrote;	/* remote transaction has an xid (learnt at
								 * pre-commit) */
	char		gid[128];		/* PREPARE TRANSACTION sent with this GID
								 * ("" = none) */
	bool		prepared;		/* ... and the participant confirmed it */
	bool		detached;		/* detached_sql was sent and its result is
								 * still to be read (dtx_conn_reap_detached) */
	char		detached_sql[160];
	bool		outside_xact;	/* its commands are not part of the local
								 * transaction (an outbox sink's): the
								 * transaction callbacks leave it alone,
								 * even with a command in flight */
	bool		copy_refused;	/* the participant answered with COPY: the
								 * connection was closed */
	bool		timed_out;		/* the participant did not answer by the
								 * deadline: the connection was closed */
	int			timeout_ms;		/* each command must be answered within this
								 * (0 = no limit but interrupts) */
	const char *timeout_setting;	/* the GUC timeout_ms comes from */
	TimestampTz deadline;		/* of the command in flight (0 = none) */
	uint32		server_hashvalue;
	uint32		mapping_hashvalue;
} DtxConn;

/* Cache */
extern DtxConn *dtx_conn_get(ForeignServer *server, UserMapping *user);
extern void dtx_conn_disconnect(DtxConn *c);
extern bool dtx_conn_usable(DtxConn *c);
extern HTAB *dtx_conn_hash(void);

/* Interruptible I/O */
extern void dtx_conn_send(DtxConn *c, const char *sql);
extern void dtx_conn_send_params(DtxConn *c, const char *sql, int nparams,
								 const char *const *values);
extern bool dtx_conn_wait(DtxConn **conns, int n, TimestampTz deadline);
extern PGresult *dtx_conn_next_result(DtxConn *c, TimestampTz deadline);
extern PGresult *dtx_conn_get_result(DtxConn *c);
extern PGresult *dtx_conn_collect(DtxConn *c, const char *sql);
extern PGresult *dtx_conn_exec(DtxConn *c, const char *sql);
extern void dtx_conn_open_temp(DtxConn *c, ForeignServer *server,
							   UserMapping *user);
extern void dtx_conn_exec_command(DtxConn *c, const char *sql);

/* Commands whose result is read later (phase 2 without waiting) */
extern void dtx_conn_send_detached(DtxConn *c, const char *sql);
extern void dtx_conn_reap_detached(DtxConn *c);

/* Abort paths: never ERROR, give up (and disconnect) at the deadline */
extern bool dtx_conn_cancel_and_drain(DtxConn *c, TimestampTz deadline);
extern bool dtx_conn_exec_quietly(DtxConn *c, const char *sql,
								  TimestampTz deadline);
extern TimestampTz dtx_cleanup_deadline(void);

/* Outcome of one command of dtx_conn_run_quietly_all */
typedef struct DtxQuietResult
{
	bool		ok;				/* the command succeeded */
	bool		lost;			/* no answer: connection lost or deadline */
	char		sqlstate[6];	/* remote error code, "" if none */
	char	   *message;		/* error text (palloc'd), NULL if ok */
} DtxQuietResult;

extern void dtx_conn_run_quietly_all(DtxConn **conns, char **sqls, int n,
									 TimestampTz deadline,
									 DtxQuietResult *out);

/* Errors */
extern void dtx_report_remote_error(int elevel, DtxConn *c, PGresult *res,
									const char *sql);
extern char *dtx_remote_text(const char *s);
extern void dtx_check_client_encoding(DtxConn *c);

#endif							/* DTX_CONNECTION_H */

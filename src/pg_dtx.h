/*-------------------------------------------------------------------------
 *
 * pg_dtx.h
 *	  Declarations shared by every pg_dtx subsystem: settings (GUCs) and
 *	  pg_dtx's own SQLSTATEs (class DX).
 *
 * Each subsystem has its own header for what it exports; this one holds
 * only what all of them need.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_DTX_H
#define PG_DTX_H

#include "fmgr.h"
#include "utils/elog.h"

/*
 * pg_dtx's own error conditions, SQLSTATE class DX.  The README lists them;
 * keep the two in step.
 */
#define ERRCODE_DTX_PARTICIPANT_UNAVAILABLE		MAKE_SQLSTATE('D','X','0','0','1')
#define ERRCODE_DTX_PARTICIPANT_NO_2PC			MAKE_SQLSTATE('D','X','0','0','2')
#define ERRCODE_DTX_PARTICIPANT_STATE_UNKNOWN	MAKE_SQLSTATE('D','X','0','0','3')
#define ERRCODE_DTX_DECISION_CONFLICT			MAKE_SQLSTATE('D','X','0','0','4')
#define ERRCODE_DTX_NOT_OUR_TRANSACTION			MAKE_SQLSTATE('D','X','0','0','5')
#define ERRCODE_DTX_STALE_FENCING_TOKEN			MAKE_SQLSTATE('D','X','0','1','0')
#define ERRCODE_DTX_LEASE_NOT_HELD				MAKE_SQLSTATE('D','X','0','1','1')
#define ERRCODE_DTX_FENCING_TOKEN_REQUIRED		MAKE_SQLSTATE('D','X','0','1','2')

/*
 * The search_path of everything pg_dtx runs with privileges (the workers,
 * SECURITY DEFINER functions): PostgreSQL's own safe path, so that no
 * schema a user can create objects in takes part in name resolution.
 */
#define DTX_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

/* Settings (defined in pg_dtx.c) */
extern int	dtx_connect_timeout;	/* seconds */
extern int	dtx_cancel_timeout;		/* milliseconds */
extern int	dtx_remote_timeout;		/* milliseconds, 0 = none */
extern int	dtx_recovery_interval;	/* seconds */

/*
 * dtx_try runs fn(arg) in an internal subtransaction, in the caller's
 * memory context.  Returns NULL if it succeeded; else the subtransaction is
 * rolled back and the error returned (the caller FreeErrorData()s it) --
 * except an error of this backend's own interrupt processing (query
 * cancel, statement_timeout, lock_timeout, a recovery conflict), which is
 * re-thrown after the rollback: those end the statement, whatever fn was
 * doing.  The caller frees what it owns on that path too (PG_FINALLY).
 */
typedef void (*DtxTryFn) (void *arg);
extern ErrorData *dtx_try(DtxTryFn fn, void *arg);

/* ERROR 22004 "<what> must not be null" if argument argno is NULL */
extern void dtx_check_not_null(FunctionCallInfo fcinfo, int argno, const char *what);

#endif							/* PG_DTX_H */

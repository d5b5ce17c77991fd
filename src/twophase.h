/*-------------------------------------------------------------------------
 *
 * twophase.h
 *	  The commit protocol of global transactions (presumed abort, the local
 *	  commit is the decision), GIDs, and fault injection for tests.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_TWOPHASE_H
#define DTX_TWOPHASE_H

#include "access/transam.h"
#include "connection.h"

/* Named points where dtx.fault_point stops or crashes the coordinator */
typedef enum DtxFaultPoint
{
	DTX_FAULT_NONE,
	DTX_FAULT_BEFORE_PREPARE,
	DTX_FAULT_AFTER_FIRST_PREPARE,
	DTX_FAULT_AFTER_PREPARE,
	DTX_FAULT_AFTER_LOCAL_COMMIT,
	DTX_FAULT_AFTER_FIRST_COMMIT_PREPARED
} DtxFaultPoint;

typedef enum DtxFaultAction
{
	DTX_FAULT_ERROR,
	DTX_FAULT_CRASH,
	DTX_FAULT_PAUSE
} DtxFaultAction;

extern int	dtx_fault_point;
extern int	dtx_fault_action;
extern int	dtx_fault_pause;
extern int	dtx_commit_timeout;
extern bool dtx_phase2_wait;
extern const struct config_enum_entry dtx_fault_point_options[];
extern const struct config_enum_entry dtx_fault_action_options[];

/*
 * GIDs: dtx_<system identifier>_<database oid>_<incarnation, hex>_<full
 * xid>_<user oid>_<participant number>
 */
typedef struct DtxGid
{
	uint64		sysid;
	Oid			dboid;
	uint64		incarnation;
	FullTransactionId fxid;
	Oid			userid;
	int			participant;
} DtxGid;

extern char *dtx_gid_prefix(Oid dboid);
extern bool dtx_gid_parse(const char *gid, DtxGid *out);
extern bool dtx_gid_is_ours(const char *gid, DtxGid *out);

extern void twophase_pre_commit(DtxConn **parts, int n);
extern void twophase_post_commit(void);
extern void twophase_abort(void);

#endif							/* DTX_TWOPHASE_H */

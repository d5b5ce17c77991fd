/*-------------------------------------------------------------------------
 *
 * recovery.h
 *	  Resolution of in-doubt prepared transactions.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_RECOVERY_H
#define DTX_RECOVERY_H

#include "utils/tuplestore.h"

typedef struct DtxRecoveryTotals
{
	int			committed;
	int			rolled_back;
	int			failed;			/* prepared transactions not resolved */
	int			servers_failed; /* participants that could not be listed */
	int			deleted;		/* decision rows deleted */
} DtxRecoveryTotals;

extern void dtx_recovery_pass(Oid serverid, bool resolve, Tuplestorestate *ts,
							  TupleDesc td, DtxRecoveryTotals *totals,
							  bool backoff);

#endif							/* DTX_RECOVERY_H */

/*-------------------------------------------------------------------------
 *
 * coordinator.h
 *	  The local transaction as coordinator of remote work: dtx.exec,
 *	  dtx.query, and the transaction callbacks that end remote
 *	  transactions with the local one.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_COORDINATOR_H
#define DTX_COORDINATOR_H

#include "access/xact.h"

extern void coord_xact_callback(XactEvent event);
extern void dtx_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
								 SubTransactionId parentSubid, void *arg);

#endif							/* DTX_COORDINATOR_H */

/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The launcher and the per-database recovery workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_WORKER_H
#define DTX_WORKER_H

#include "access/xact.h"

extern void dtx_launcher_register(void);
extern void dtx_worker_init(void);
extern void dtx_worker_xact_callback(XactEvent event);
extern void dtx_worker_wake(Oid dboid);

#endif							/* DTX_WORKER_H */

/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  The transactional outbox and its dispatcher.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_OUTBOX_H
#define DTX_OUTBOX_H

#include "access/xact.h"
#include "miscadmin.h"

extern void dtx_outbox_define_gucs(void);
extern void dtx_outbox_xact_callback(XactEvent event);
extern long dtx_outbox_work(void);
extern void dtx_outbox_sigterm(SIGNAL_ARGS);
extern void dtx_outbox_on_exit(void);

#endif							/* DTX_OUTBOX_H */

/*-------------------------------------------------------------------------
 *
 * fence.h
 *	  Fenced tables: the trigger that rejects writes with stale tokens.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_FENCE_H
#define DTX_FENCE_H

extern char *dtx_fencing_token;

extern void dtx_fence_define_gucs(void);
extern void dtx_fence_xact_reset(void);

#endif							/* DTX_FENCE_H */

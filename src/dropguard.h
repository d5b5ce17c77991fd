/*-------------------------------------------------------------------------
 *
 * dropguard.h
 *	  Participants with unresolved work cannot be dropped (dropguard.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_DROPGUARD_H
#define DTX_DROPGUARD_H

extern void dtx_dropguard_init(void);

/*
 * Lock a participant server against DROP until the end of the current
 * transaction; ERROR 42704 if it was dropped meanwhile.
 */
extern void dtx_dropguard_lock_server(Oid serverid, const char *servername);

#endif							/* DTX_DROPGUARD_H */

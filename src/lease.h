/*-------------------------------------------------------------------------
 *
 * lease.h
 *	  Leases with fencing tokens: a shared-memory lease table, FIFO waiters
 *	  woken one at a time, and per-database token counters made durable in
 *	  WAL-logged ranges.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_LEASE_H
#define DTX_LEASE_H

#include "datatype/timestamp.h"

#define DTX_LEASE_NAME_MAX		255 /* bytes */
#define DTX_LEASE_HOLDER_MAX	127 /* bytes */

/* Settings (defined in lease.c) */
extern int	dtx_max_leases;
extern int	dtx_lease_max_ttl;	/* seconds */
extern int	dtx_lease_user_max_ttl;	/* seconds, for roles not superuser */
extern int	dtx_max_leases_per_role;	/* -1: no limit */

extern void dtx_lease_define_gucs(void);
extern void dtx_lease_shmem_request(void);
extern void dtx_lease_shmem_startup(void);
extern void dtx_lease_mark_epoch(void);
extern void dtx_lease_watchdog(void);

/* What the holder rule of a fenced table found for (resource, token) */
typedef enum DtxLeaseCheck
{
	DTX_LEASE_OK,				/* held with that token, not expired */
	DTX_LEASE_NOT_HELD,			/* no holder */
	DTX_LEASE_OTHER_TOKEN,		/* held with another token */
	DTX_LEASE_EXPIRED			/* held with that token, but expired */
} DtxLeaseCheck;

extern DtxLeaseCheck dtx_lease_check(const char *name, int len, int64 token,
									 int64 *current, Oid *role);

#endif							/* DTX_LEASE_H */

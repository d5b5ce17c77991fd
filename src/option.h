/*-------------------------------------------------------------------------
 *
 * option.h
 *	  Options of pg_dtx foreign servers and user mappings.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_OPTION_H
#define DTX_OPTION_H

#include "foreign/foreign.h"

/* A participant: a foreign server of wrapper pg_dtx or postgres_fdw */
extern ForeignServer *dtx_get_participant(const char *servername);
extern void dtx_check_participant_wrapper(ForeignServer *server);

/*
 * libpq keyword/value arrays for connecting to a server as a user mapping;
 * palloc'd in the current memory context, NULL-terminated.  Options that
 * are not libpq's (postgres_fdw's own ones, password_required) are left out.
 */
extern int	dtx_build_conn_params(ForeignServer *server, UserMapping *user,
								  const char **keywords, const char **values,
								  int max);
extern int	dtx_max_conn_params(ForeignServer *server, UserMapping *user);

/* The user mapping's password_required option (default true). */
extern bool dtx_password_required(UserMapping *user);

/* True when the user mapping carries a non-empty password option */
extern bool dtx_user_mapping_has_password(UserMapping *user);

#endif							/* DTX_OPTION_H */

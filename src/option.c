/*-------------------------------------------------------------------------
 *
 * option.c
 *	  The pg_dtx foreign-data wrapper's option validator, and the mapping
 *	  from a participant's foreign server and user mapping to libpq
 *	  connection parameters.
 *
 * Participants are foreign servers.  Servers of wrapper pg_dtx are checked
 * here: a server takes libpq's connection options (host, port, dbname,
 * sslmode, ...), a user mapping takes user, password and the ssl client
 * credentials, and password_required (superuser only).  Servers of
 * postgres_fdw are accepted as participants too: postgres_fdw validated
 * their options, and we pass on only the ones libpq knows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/reloptions.h"
#include "catalog/pg_foreign_data_wrapper.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_user_mapping.h"
#include "commands/defrem.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "option.h"
#include "pg_dtx.h"

PG_FUNCTION_INFO_V1(fdw_validator);

/* Where an option may appear */
typedef enum DtxOptionContext
{
	DTX_OPT_SERVER = 1,
	DTX_OPT_USER = 2
} DtxOptionContext;

typedef struct DtxOption
{
	char	   *name;
	int			contexts;		/* bitmask of DtxOptionContext */
	bool		is_libpq;		/* passed on to libpq when connecting */
} DtxOption;

/*
 * Options of libpq that pg_dtx sets itself or that make no sense for a
 * participant connection.
 */
static const char *const dtx_reserved_libpq_options[] = {
	"application_name",			/* names pg_dtx and the coordinating backend */
	"fallback_application_name",
	"client_encoding",			/* always the local database encoding */
	"replication",				/* never a replication connection */
	NULL
};

/* Options that belong in a user mapping only */
static const char *const dtx_user_only_libpq_options[] = {
	"user", "password", "sslpassword", "sslcert", "sslkey", NULL
};

static DtxOption *dtx_options = NULL;	/* built once per backend */

static bool
name_in_list(const char *name, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(name, *list) == 0)
			return true;
	return false;
}

/*
 * dtx_init_options builds the table of valid options from libpq's own list,
 * once per backend.  The table lives in TopMemoryContext.  ERRORs only when
 * out of memory.
 */
static void
dtx_init_options(void)
{
	PQconninfoOption *lopt;
	PQconninfoOption *defs;
	int			n = 0;
	int			i = 0;

	if (dtx_options)
		return;

	defs = PQconndefaults();
	if (defs == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not get libpq's default connection options.")));

	for (lopt = defs; lopt->keyword; lopt++)
		n++;

	/* + password_required + terminator */
	dtx_options = MemoryContextAllocZero(TopMemoryContext,
										 sizeof(DtxOption) * (n + 2));
	for (lopt = defs; lopt->keyword; lopt++)
	{
		DtxOption  *o;

		/* debug options ("D") are not for users */
		if (strchr(lopt->dispchar, 'D'))
			continue;
		if (name_in_list(lopt->keyword, dtx_reserved_libpq_options))
			continue;

		o = &dtx_options[i++];
		o->name = MemoryContextStrdup(TopMemoryContext, lopt->keyword);
		o->is_libpq = true;
		o->contexts = name_in_list(lopt->keyword, dtx_user_only_libpq_options)
			? DTX_OPT_USER : DTX_OPT_SERVER;
	}
	PQconninfoFree(defs);

	dtx_options[i].name = "password_required";
	dtx_options[i].contexts = DTX_OPT_USER;
	dtx_options[i].is_libpq = false;
}

static DtxOption *
dtx_find_option(const char *name)
{
	DtxOption  *o;

	dtx_init_options();
	for (o = dtx_options; o->name; o++)
		if (strcmp(o->name, name) == 0)
			return o;
	return NULL;
}

static bool
dtx_is_libpq_option(const char *name)
{
	DtxOption  *o = dtx_find_option(name);

	return o && o->is_libpq;
}

/*
 * fdw_validator checks the options of the pg_dtx wrapper, its servers and
 * user mappings.  Unknown options and options in the wrong place (a password
 * on a server, say) are refused with ERRCODE_FDW_INVALID_OPTION_NAME and a
 * hint listing what is valid there; password_required can be turned off,
 * and sslcert and sslkey set, by a superuser only.
 */
Datum
fdw_validator(PG_FUNCTION_ARGS)
{
	List	   *options = untransformRelOptions(PG_GETARG_DATUM(0));
	Oid			catalog = PG_GETARG_OID(1);
	int			context;
	ListCell   *lc;

	if (catalog == ForeignServerRelationId)
		context = DTX_OPT_SERVER;
	else if (catalog == UserMappingRelationId)
		context = DTX_OPT_USER;
	else
		context = 0;			/* the wrapper itself, or a foreign table */

	foreach(lc, options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);
		DtxOption  *opt = dtx_find_option(def->defname);

		if (opt == NULL || (opt->contexts & context) == 0)
		{
			StringInfoData valid;
			DtxOption  *o;

			initStringInfo(&valid);
			for (o = dtx_options; o->name; o++)
			{
				if (o->contexts & context)
					appendStringInfo(&valid, "%s%s",
									 valid.len > 0 ? ", " : "", o->name);
			}

			if (opt != NULL && (opt->contexts & DTX_OPT_USER))
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("option \"%s\" is only valid in a user mapping",
								def->defname),
						 errhint("Set it with CREATE USER MAPPING ... SERVER ... OPTIONS (%s '...').",
								 def->defname)));
			if (opt != NULL && (opt->contexts & DTX_OPT_SERVER))
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("option \"%s\" is only valid for a server",
								def->defname),
						 errhint("Set it with CREATE SERVER ... OPTIONS (%s '...').",
								 def->defname)));
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid option \"%s\"", def->defname),
					 valid.len > 0
					 ? errhint("Valid options in this context are: %s.", valid.data)
					 : errhint("There are no valid options in this context.")));
		}

		if (strcmp(def->defname, "password_required") == 0)
		{
			bool		pw_required = defGetBoolean(def);

			if (!pw_required && !superuser())
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("password_required=false is superuser-only"),
						 errhint("User mappings with the password_required option set to false may only be created or modified by a superuser.")));
		}
		else if ((strcmp(def->defname, "sslcert") == 0 ||
				  strcmp(def->defname, "sslkey") == 0) && !superuser())
		{
			/* files the server reads: as postgres_fdw, a superuser's choice */
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("sslcert and sslkey are superuser-only"),
					 errhint("User mappings with the sslcert or sslkey options set may only be created or modified by a superuser.")));
		}
		else if (strcmp(def->defname, "port") == 0)
		{
			char	   *end;
			long		port = strtol(defGetString(def), &end, 10);

			if (*end != '\0' || port < 1 || port > 65535)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
						 errmsg("invalid value for option \"port\": \"%s\"",
								defGetString(def)),
						 errhint("A port is an integer between 1 and 65535.")));
		}
		else if (strcmp(def->defname, "connect_timeout") == 0)
		{
			char	   *end;
			long		t = strtol(defGetString(def), &end, 10);

			if (*end != '\0' || t < 0)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
						 errmsg("invalid value for option \"connect_timeout\": \"%s\"",
								defGetString(def)),
						 errhint("connect_timeout is a number of seconds.")));
		}
	}

	PG_RETURN_VOID();
}

/*
 * dtx_check_participant_wrapper ERRORs (42809) unless the server belongs to
 * the pg_dtx or the postgres_fdw wrapper.
 */
void
dtx_check_participant_wrapper(ForeignServer *server)
{
	ForeignDataWrapper *fdw = GetForeignDataWrapper(server->fdwid);

	if (strcmp(fdw->fdwname, "pg_dtx") != 0 &&
		strcmp(fdw->fdwname, "postgres_fdw") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("server \"%s\" is not a pg_dtx participant",
						server->servername),
				 errdetail("Server \"%s\" uses foreign-data wrapper \"%s\".",
						   server->servername, fdw->fdwname),
				 errhint("Participants are servers of foreign-data wrapper pg_dtx or postgres_fdw.")));
}

/*
 * dtx_get_participant looks up a participant by name and checks that the
 * current user may use it.  ERRORs: 42704 for an unknown server, 42809 for a
 * server of another wrapper, 42501 without USAGE on the server.
 */
ForeignServer *
dtx_get_participant(const char *servername)
{
	ForeignServer *server = GetForeignServerByName(servername, false);
	AclResult	aclresult;

	dtx_check_participant_wrapper(server);

	aclresult = pg_foreign_server_aclcheck(server->serverid, GetUserId(),
										   ACL_USAGE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FOREIGN_SERVER, server->servername);

	return server;
}

int
dtx_max_conn_params(ForeignServer *server, UserMapping *user)
{
	return list_length(server->options) + list_length(user->options);
}

/*
 * dtx_build_conn_params fills keywords/values (room for max entries, not
 * counting the terminator the caller adds) with the libpq options of the
 * server and the user mapping, and returns how many it wrote.  The strings
 * point into the ForeignServer/UserMapping option lists.
 */
int
dtx_build_conn_params(ForeignServer *server, UserMapping *user,
					  const char **keywords, const char **values, int max)
{
	List	   *lists[2];
	int			n = 0;
	int			l;

	lists[0] = server->options;
	lists[1] = user->options;
	for (l = 0; l < 2; l++)
	{
		ListCell   *lc;

		foreach(lc, lists[l])
		{
			DefElem    *d = (DefElem *) lfirst(lc);

			if (!dtx_is_libpq_option(d->defname))
				continue;
			Assert(n < max);
			keywords[n] = d->defname;
			values[n] = defGetString(d);
			n++;
		}
	}
	return n;
}

bool
dtx_password_required(UserMapping *user)
{
	ListCell   *lc;

	foreach(lc, user->options)
	{
		DefElem    *d = (DefElem *) lfirst(lc);

		if (strcmp(d->defname, "password_required") == 0)
			return defGetBoolean(d);
	}
	return true;
}

bool
dtx_user_mapping_has_password(UserMapping *user)
{
	ListCell   *lc;

	foreach(lc, user->options)
	{
		DefElem    *d = (DefElem *) lfirst(lc);

		if (strcmp(d->defname, "password") == 0 && defGetString(d)[0] != '\0')
			return true;
	}
	return false;
}

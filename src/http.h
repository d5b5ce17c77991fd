/*-------------------------------------------------------------------------
 *
 * http.h
 *	  HTTP POSTs for the outbox's http sinks: many requests in flight at
 *	  once on one libcurl multi handle, kept for the life of the process so
 *	  that connections are reused.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DTX_HTTP_H
#define DTX_HTTP_H

#include "postgres.h"

/* One POST; the caller fills the first block, dtx_http_perform the second */
typedef struct DtxHttpRequest
{
	const char *url;
	const char *const *headers; /* "Name: value", nheaders of them */
	int			nheaders;
	const char *body;			/* JSON */
	size_t		body_len;
	int64		message_id;		/* sent as Idempotency-Key */
	long		timeout_ms;

	bool		transport_error;	/* no HTTP answer: connect, timeout, ... */
	long		status;			/* HTTP status, 0 if none */
	int64		retry_after_s;	/* Retry-After in seconds, -1 if none */
	char		error[256];		/* curl's error, or the start of the body */
} DtxHttpRequest;

extern void dtx_http_perform(DtxHttpRequest *reqs, int n);
extern void dtx_http_abandon(void);

#endif							/* DTX_HTTP_H */

/*-------------------------------------------------------------------------
 *
 * http.c
 *	  HTTP POSTs for the outbox's http sinks, with libcurl's multi interface.
 *
 * One multi handle lives as long as the process: its connection cache keeps
 * connections to each sink open between rounds (HTTP/1.1 keep-alive), and
 * libcurl runs every request of a round concurrently on those connections.
 * The wait is sliced (100 ms) so that SIGTERM and postmaster death are seen
 * promptly while requests are in flight.  Nothing here may ereport() while
 * libcurl is inside a callback.
 *
 * TLS uses libcurl's default CA store, which on Debian is the system's
 * (/etc/ssl/certs, package ca-certificates).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "storage/latch.h"

#include "http.h"

#define DTX_HTTP_SLICE_MS 100

static CURLM *dtx_multi = NULL;

/* Handles being used by the current dtx_http_perform, for dtx_http_abandon */
static CURL **live_handles = NULL;
static struct curl_slist **live_lists = NULL;
static int	nlive = 0;

typedef struct BodySink
{
	DtxHttpRequest *req;
	size_t		used;
} BodySink;

/* Keep the start of the response body: it goes into last_error on failure */
static size_t
http_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	BodySink   *b = (BodySink *) userdata;
	size_t		len = size * nmemb;
	size_t		room = sizeof(b->req->error) - 1 - b->used;

	if (room > 0)
	{
		size_t		take = Min(room, len);

		memcpy(b->req->error + b->used, ptr, take);
		b->used += take;
		b->req->error[b->used] = '\0';
	}
	return len;
}

static void
http_init(void)
{
	if (dtx_multi != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "could not initialise libcurl");
	dtx_multi = curl_multi_init();
	if (dtx_multi == NULL)
		elog(ERROR, "could not initialise libcurl");
	/* a few idle connections per sink host are kept */
	curl_multi_setopt(dtx_multi, CURLMOPT_MAXCONNECTS, 256L);
}

/*
 * dtx_http_abandon drops the requests of an interrupted dtx_http_perform
 * (after an ERROR); their connections are closed.
 */
void
dtx_http_abandon(void)
{
	int			i;

	for (i = 0; i < nlive; i++)
	{
		if (live_handles[i])
		{
			curl_multi_remove_handle(dtx_multi, live_handles[i]);
			curl_easy_cleanup(live_handles[i]);
		}
		if (live_lists[i])
			curl_slist_free_all(live_lists[i]);
	}
	if (live_handles)
	{
		free(live_handles);
		free(live_lists);
	}
	live_handles = NULL;
	live_lists = NULL;
	nlive = 0;
}

/*
 * dtx_http_perform sends every request concurrently and returns when all
 * have an outcome (each bounded by its timeout_ms).  ERRORs (interrupts)
 * only between libcurl calls; the caller then calls dtx_http_abandon.
 */
void
dtx_http_perform(DtxHttpRequest *reqs, int n)
{
	BodySink   *sinks;
	int			running = 0;
	int			i;

	if (n <= 0)
		return;
	http_init();
	dtx_http_abandon();

	sinks = palloc0(sizeof(BodySink) * n);
	live_handles = calloc(n, sizeof(CURL *));
	live_lists = calloc(n, sizeof(struct curl_slist *));
	if (live_handles == NULL || live_lists == NULL)
		elog(ERROR, "out of memory");
	nlive = n;

	for (i = 0; i < n; i++)
	{
		DtxHttpRequest *r = &reqs[i];
		CURL	   *h = curl_easy_init();
		struct curl_slist *list = NULL;
		char		idem[64];
		int			j;

		r->transport_error = false;
		r->status = 0;
		r->retry_after_s = -1;
		r->error[0] = '\0';
		sinks[i].req = r;
		if (h == NULL)
		{
			r->transport_error = true;
			strlcpy(r->error, "could not create a libcurl handle", sizeof(r->error));
			continue;
		}
		live_handles[i] = h;
		list = curl_slist_append(list, "Content-Type: application/json");
		list = curl_slist_append(list, "Expect:");	/* no 100-continue round trip */
		snprintf(idem, sizeof(idem), "Idempotency-Key: " INT64_FORMAT, r->message_id);
		list = curl_slist_append(list, idem);
		for (j = 0; j < r->nheaders; j++)
			list = curl_slist_append(list, r->headers[j]);
		live_lists[i] = list;

		curl_easy_setopt(h, CURLOPT_URL, r->url);
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) r->body_len);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, r->timeout_ms);
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, r->timeout_ms);
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(h, CURLOPT_USERAGENT, "pg_dtx/1.0");
#if LIBCURL_VERSION_NUM >= 0x075500
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
		curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_write_cb);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, &sinks[i]);
		curl_easy_setopt(h, CURLOPT_PRIVATE, (void *) &sinks[i]);
		curl_multi_add_handle(dtx_multi, h);
	}

	do
	{
		CURLMsg    *msg;
		int			left;
		CURLMcode	mc;

		CHECK_FOR_INTERRUPTS();
		mc = curl_multi_perform(dtx_multi, &running);
		if (mc != CURLM_OK)
			elog(ERROR, "libcurl: %s", curl_multi_strerror(mc));
		while ((msg = curl_multi_info_read(dtx_multi, &left)) != NULL)
		{
			BodySink   *b;
			DtxHttpRequest *r;
			CURL	   *h = msg->easy_handle;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **) &b);
			r = b->req;
			if (msg->data.result != CURLE_OK)
			{
				r->transport_error = true;
				strlcpy(r->error, curl_easy_strerror(msg->data.result), sizeof(r->error));
			}
			else
			{
				curl_off_t	ra = -1;

				curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
				if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
					r->retry_after_s = (int64) ra;
			}
		}
		if (running > 0)
		{
			mc = curl_multi_poll(dtx_multi, NULL, 0, DTX_HTTP_SLICE_MS, NULL);
			if (mc != CURLM_OK)
				elog(ERROR, "libcurl: %s", curl_multi_strerror(mc));
		}
	} while (running > 0);

	dtx_http_abandon();			/* all done: frees the handles and lists */
	pfree(sinks);
}

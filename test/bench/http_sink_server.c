/*-------------------------------------------------------------------------
 *
 * http_sink_server.c
 *	  Minimal HTTP/1.1 endpoint for benchmarking the outbox http sink: it
 *	  answers every request with 200 {"ok":true} and counts them.
 *
 *	  http_sink_server PORTFILE [PORT [STATSFILE]]
 *
 *	  cc -O2 -Wall -o http_sink_server http_sink_server.c
 *
 * Listens on 127.0.0.1:PORT (0, the default, picks an ephemeral port) and
 * writes the port number to PORTFILE once it accepts connections
 * (PORTFILE.tmp, then renamed, so a reader never sees a partial file).
 *
 * One thread, one epoll loop, level-triggered, non-blocking sockets; no
 * dependency beyond libc and Linux.  Connections are kept alive (HTTP/1.1,
 * or HTTP/1.0 with "Connection: keep-alive") and pipelined requests are
 * answered in order, one write per batch.  A request is a request line, CRLF
 * terminated headers, and a body of Content-Length bytes (read and thrown
 * away as it streams in, so bodies of any size take no memory); a request
 * with "Expect: 100-continue" gets "100 Continue" first.  Chunked request
 * bodies are not supported (libcurl sends Content-Length for POSTFIELDS):
 * such a request gets 501 and the connection is closed, like any malformed
 * one (400) or one whose headers exceed 64 kB (431).
 *
 * Every well-formed request, whatever its method and path, is answered
 *
 *	  HTTP/1.1 200 OK\r\n
 *	  Content-Type: application/json\r\n
 *	  Content-Length: 11\r\n
 *	  \r\n
 *	  {"ok":true}
 *
 * and counted, except requests for the path /_count (query string ignored),
 * which are answered {"count": N}, N being the number counted so far.  The
 * answer also says "Connection: close" when the request asked for it (the
 * connection is then closed), "Connection: keep-alive" to an HTTP/1.0
 * request that asked for that; HEAD requests get the headers only.
 *
 * Signals: SIGUSR1 prints "http_sink_server: N requests served" on stderr
 * (and rewrites STATSFILE); SIGTERM and SIGINT make it print the same line,
 * rewrite STATSFILE and exit 0.  When STATSFILE is given it is also
 * rewritten every second, atomically (tmp + rename), with N and a newline.
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define PROGNAME		"http_sink_server"
#define MAX_HEADER		(64 * 1024)	/* request line + headers */
#define INITIAL_INBUF	(8 * 1024)
#define READ_CHUNK		(64 * 1024)	/* bytes read at most per event */
#define MAX_EVENTS		256

#define RESPONSE_OK_BODY	"{\"ok\":true}"

/* What an epoll event points to: the listener, signalfd, timerfd, or a
 * connection (a Conn, whose first member is a Source). */
typedef enum
{
	SRC_LISTENER,
	SRC_SIGNAL,
	SRC_TIMER,
	SRC_CONN
} SourceKind;

typedef struct
{
	SourceKind	kind;
	int			fd;
} Source;

typedef struct Conn
{
	Source		src;

	/* unparsed input: bytes [in_off, in_len) of inbuf */
	char	   *inbuf;
	size_t		in_cap;
	size_t		in_len;
	size_t		in_off;

	/* pending output: bytes [out_off, out_len) of outbuf */
	char	   *outbuf;
	size_t		out_cap;
	size_t		out_len;
	size_t		out_off;

	/* request in progress: body bytes still to discard, then answer */
	int			in_body;
	uint64_t	body_left;
	int			req_is_count;
	int			req_head;
	int			req_keep_alive;
	int			req_http10;

	int			want_out;		/* registered for EPOLLOUT, not EPOLLIN */
	int			closing;		/* close once outbuf is flushed */
	int			eof;			/* peer closed its side */
} Conn;

static int	epfd = -1;
static Source listener = {SRC_LISTENER, -1};
static Source sigsrc = {SRC_SIGNAL, -1};
static Source timersrc = {SRC_TIMER, -1};
static const char *statsfile = NULL;
static uint64_t served = 0;		/* requests answered, /_count excluded */
static int	accept_paused = 0;	/* out of descriptors: wait for a close */

static void
die(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, PROGNAME ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (errno != 0)
		fprintf(stderr, ": %s", strerror(errno));
	fputc('\n', stderr);
	exit(1);
}

static void *
xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (p == NULL)
		die("out of memory");
	return p;
}

/* Write CONTENT to PATH through PATH.tmp and rename(2). */
static int
write_file_atomic(const char *path, const char *content)
{
	char		tmp[4096];
	FILE	   *f;
	int			ok;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int) sizeof(tmp))
		return -1;
	f = fopen(tmp, "w");
	if (f == NULL)
		return -1;
	ok = fputs(content, f) >= 0;
	ok = (fclose(f) == 0) && ok;
	if (!ok || rename(tmp, path) != 0)
	{
		unlink(tmp);
		return -1;
	}
	return 0;
}

static void
write_stats(void)
{
	char		line[32];

	if (statsfile == NULL)
		return;
	snprintf(line, sizeof(line), "%llu\n", (unsigned long long) served);
	if (write_file_atomic(statsfile, line) != 0)
		fprintf(stderr, PROGNAME ": could not write \"%s\": %s\n",
				statsfile, strerror(errno));
}

static void
report(void)
{
	fprintf(stderr, PROGNAME ": %llu requests served\n",
			(unsigned long long) served);
	write_stats();
}

static void
epoll_set(int op, Source *src, uint32_t events)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.ptr = src;
	if (epoll_ctl(epfd, op, src->fd, &ev) != 0)
		die("epoll_ctl");
}

/* ----------------------------------------------------------------------
 * Connections
 * ---------------------------------------------------------------------- */

static void
conn_close(Conn *c)
{
	/* closing the descriptor removes it from the epoll set */
	close(c->src.fd);
	free(c->inbuf);
	free(c->outbuf);
	free(c);
	if (accept_paused)
	{
		accept_paused = 0;
		epoll_set(EPOLL_CTL_MOD, &listener, EPOLLIN);
	}
}

static void
out_append(Conn *c, const char *data, size_t len)
{
	if (c->out_len + len > c->out_cap)
	{
		size_t		cap = c->out_cap ? c->out_cap : 1024;

		while (cap < c->out_len + len)
			cap *= 2;
		c->outbuf = xrealloc(c->outbuf, cap);
		c->out_cap = cap;
	}
	memcpy(c->outbuf + c->out_len, data, len);
	c->out_len += len;
}

static void
respond_error(Conn *c, const char *status)
{
	char		buf[256];
	int			n;

	n = snprintf(buf, sizeof(buf),
				 "HTTP/1.1 %s\r\n"
				 "Content-Type: application/json\r\n"
				 "Content-Length: %zu\r\n"
				 "Connection: close\r\n"
				 "\r\n"
				 "{\"error\":\"%s\"}",
				 status, strlen(status) + 12, status);
	out_append(c, buf, (size_t) n);
	c->closing = 1;
}

/* The answer to the request whose body has just been consumed. */
static void
respond(Conn *c)
{
	char		body[64];
	char		buf[256];
	int			blen;
	int			n;
	const char *connhdr = "";

	if (!c->req_keep_alive)
	{
		connhdr = "Connection: close\r\n";
		c->closing = 1;
	}
	else if (c->req_http10)
		connhdr = "Connection: keep-alive\r\n";

	if (c->req_is_count)
		blen = snprintf(body, sizeof(body), "{\"count\": %llu}",
						(unsigned long long) served);
	else
	{
		blen = (int) strlen(RESPONSE_OK_BODY);
		memcpy(body, RESPONSE_OK_BODY, blen);
		served++;
	}
	n = snprintf(buf, sizeof(buf),
				 "HTTP/1.1 200 OK\r\n"
				 "Content-Type: application/json\r\n"
				 "Content-Length: %d\r\n"
				 "%s"
				 "\r\n"
				 "%.*s",
				 blen, connhdr, c->req_head ? 0 : blen, body);
	out_append(c, buf, (size_t) n);
}

/* Case-insensitive search for token TOK in the comma list [v, v + len). */
static int
has_token(const char *v, size_t len, const char *tok)
{
	size_t		tlen = strlen(tok);
	size_t		i = 0;

	while (i < len)
	{
		size_t		start,
					end;

		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		start = i;
		while (i < len && v[i] != ',')
			i++;
		end = i;
		while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
			end--;
		if (end - start == tlen && strncasecmp(v + start, tok, tlen) == 0)
			return 1;
	}
	return 0;
}

/*
 * Parse the request head in [p, p + len), which ends with the blank line.
 * Sets up the request state of C; returns NULL, or the error status.
 */
static const char *
parse_head(Conn *c, const char *p, size_t len)
{
	const char *end = p + len;
	const char *eol = memmem(p, len, "\r\n", 2);
	const char *sp1,
			   *sp2,
			   *path_end;
	int			keep_alive_hdr = 0,
				close_hdr = 0,
				expect_continue = 0,
				have_length = 0;
	uint64_t	length = 0;

	/* request line: METHOD SP TARGET SP HTTP/1.x */
	sp1 = memchr(p, ' ', eol - p);
	if (sp1 == NULL || sp1 == p)
		return "400 Bad Request";
	sp2 = memchr(sp1 + 1, ' ', eol - (sp1 + 1));
	if (sp2 == NULL || sp2 == sp1 + 1 || eol - (sp2 + 1) != 8 ||
		memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
		(sp2[8] != '0' && sp2[8] != '1'))
		return "400 Bad Request";
	c->req_http10 = (sp2[8] == '0');
	c->req_head = (sp1 - p == 4 && memcmp(p, "HEAD", 4) == 0);
	path_end = memchr(sp1 + 1, '?', sp2 - (sp1 + 1));
	if (path_end == NULL)
		path_end = sp2;
	c->req_is_count = (path_end - (sp1 + 1) == 7 &&
					   memcmp(sp1 + 1, "/_count", 7) == 0);

	/* header fields */
	for (p = eol + 2; p < end - 2; p = eol + 2)
	{
		const char *colon,
				   *v,
				   *vend;
		size_t		nlen;

		eol = memmem(p, end - p, "\r\n", 2);
		colon = memchr(p, ':', eol - p);
		if (colon == NULL || colon == p)
			return "400 Bad Request";
		nlen = colon - p;
		for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		for (vend = eol; vend > v && (vend[-1] == ' ' || vend[-1] == '\t'); vend--)
			;

		if (nlen == 14 && strncasecmp(p, "Content-Length", 14) == 0)
		{
			const char *d;

			if (v == vend || have_length)
				return "400 Bad Request";
			for (d = v; d < vend; d++)
			{
				if (*d < '0' || *d > '9' || length > UINT64_MAX / 10 - 1)
					return "400 Bad Request";
				length = length * 10 + (uint64_t) (*d - '0');
			}
			have_length = 1;
		}
		else if (nlen == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0)
			return "501 Not Implemented";
		else if (nlen == 10 && strncasecmp(p, "Connection", 10) == 0)
		{
			close_hdr |= has_token(v, vend - v, "close");
			keep_alive_hdr |= has_token(v, vend - v, "keep-alive");
		}
		else if (nlen == 6 && strncasecmp(p, "Expect", 6) == 0)
		{
			if (!has_token(v, vend - v, "100-continue"))
				return "417 Expectation Failed";
			expect_continue = 1;
		}
	}

	c->req_keep_alive = c->req_http10 ? keep_alive_hdr && !close_hdr
		: !close_hdr;
	c->body_left = length;
	c->in_body = 1;
	if (expect_continue && length > 0 && !c->req_http10)
		out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	return NULL;
}

/*
 * Consume whatever complete requests (and body bytes) inbuf holds, queueing
 * the answers in outbuf.  Stops early once the connection is to be closed.
 */
static void
process_input(Conn *c)
{
	while (!c->closing)
	{
		char	   *p = c->inbuf + c->in_off;
		size_t		avail = c->in_len - c->in_off;

		if (c->in_body)
		{
			size_t		take = avail < c->body_left ? avail : (size_t) c->body_left;

			c->in_off += take;
			c->body_left -= take;
			if (c->body_left > 0)
				break;			/* the rest of the body is yet to come */
			c->in_body = 0;
			respond(c);
		}
		else
		{
			char	   *hend;
			const char *err;

			/* tolerate empty lines before a request line (RFC 9112 2.2) */
			while (avail >= 2 && p[0] == '\r' && p[1] == '\n')
			{
				p += 2;
				avail -= 2;
				c->in_off += 2;
			}
			hend = memmem(p, avail, "\r\n\r\n", 4);
			if (hend == NULL)
			{
				if (avail >= MAX_HEADER)
					respond_error(c, "431 Request Header Fields Too Large");
				break;
			}
			c->in_off += hend + 4 - p;
			if ((err = parse_head(c, p, hend + 4 - p)) != NULL)
				respond_error(c, err);
		}
	}

	/* keep only the unparsed bytes, at the front of the buffer */
	if (c->in_off > 0)
	{
		memmove(c->inbuf, c->inbuf + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
}

/* Write what is pending; returns -1 if the connection is gone. */
static int
flush_output(Conn *c)
{
	while (c->out_off < c->out_len)
	{
		ssize_t		n = send(c->src.fd, c->outbuf + c->out_off,
							 c->out_len - c->out_off, MSG_NOSIGNAL);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return -1;
		}
		c->out_off += (size_t) n;
	}
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	return 0;
}

/*
 * Bring the connection forward after an event: answer what can be answered,
 * flush, and pick the next event to wait for.  While output is pending we
 * stop reading (backpressure on a client that does not read its answers).
 */
static void
conn_progress(Conn *c)
{
	int			pending;

	process_input(c);
	if (flush_output(c) != 0)
	{
		conn_close(c);
		return;
	}
	pending = c->out_len > 0;
	if (!pending && (c->closing || c->eof))
	{
		conn_close(c);
		return;
	}
	if (pending != c->want_out)
	{
		c->want_out = pending;
		epoll_set(EPOLL_CTL_MOD, &c->src, pending ? EPOLLOUT : EPOLLIN);
	}
}

static void
conn_readable(Conn *c)
{
	size_t		room;
	ssize_t		n;

	/*
	 * Unparsed input is at most an incomplete head, shorter than MAX_HEADER
	 * (body bytes are dropped as they come), so this always leaves room.
	 */
	while (c->in_cap - c->in_len < READ_CHUNK / 4 &&
		   c->in_cap < MAX_HEADER + READ_CHUNK)
	{
		c->in_cap *= 2;
		c->inbuf = xrealloc(c->inbuf, c->in_cap);
	}
	room = c->in_cap - c->in_len;
	if (room > READ_CHUNK)
		room = READ_CHUNK;

	n = recv(c->src.fd, c->inbuf + c->in_len, room, 0);
	if (n < 0)
	{
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		conn_close(c);
		return;
	}
	if (n == 0)
		c->eof = 1;
	c->in_len += (size_t) n;
	conn_progress(c);
}

static void
accept_all(void)
{
	for (;;)
	{
		int			fd = accept4(listener.fd, NULL, NULL,
								 SOCK_NONBLOCK | SOCK_CLOEXEC);
		int			one = 1;
		Conn	   *c;

		if (fd < 0)
		{
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE)
			{
				/* level-triggered: stop polling until a connection closes */
				fprintf(stderr, PROGNAME ": accept: %s\n", strerror(errno));
				accept_paused = 1;
				epoll_set(EPOLL_CTL_MOD, &listener, 0);
			}
			else if (errno != EAGAIN && errno != EWOULDBLOCK)
				fprintf(stderr, PROGNAME ": accept: %s\n", strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

		c = calloc(1, sizeof(Conn));
		if (c == NULL)
			die("out of memory");
		c->src.kind = SRC_CONN;
		c->src.fd = fd;
		c->in_cap = INITIAL_INBUF;
		c->inbuf = xrealloc(NULL, c->in_cap);
		epoll_set(EPOLL_CTL_ADD, &c->src, EPOLLIN);
	}
}

/* ----------------------------------------------------------------------
 * Setup and main loop
 * ---------------------------------------------------------------------- */

static int
open_listener(int port)
{
	struct sockaddr_in addr;
	socklen_t	alen = sizeof(addr);
	int			one = 1;
	int			fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons((uint16_t) port);
	if (bind(fd, (struct sockaddr *) &addr, sizeof(addr)) != 0)
		die("bind 127.0.0.1:%d", port);
	if (listen(fd, 4096) != 0)
		die("listen");
	if (getsockname(fd, (struct sockaddr *) &addr, &alen) != 0)
		die("getsockname");
	listener.fd = fd;
	return ntohs(addr.sin_port);
}

/* Returns nonzero when the loop should stop. */
static int
handle_signals(void)
{
	struct signalfd_siginfo si;
	int			stop = 0;

	while (read(sigsrc.fd, &si, sizeof(si)) == (ssize_t) sizeof(si))
	{
		if (si.ssi_signo == SIGUSR1)
			report();
		else
			stop = 1;
	}
	return stop;
}

int
main(int argc, char **argv)
{
	const char *portfile;
	int			port = 0;
	char		line[32];
	sigset_t	mask;
	struct rlimit rl;
	struct epoll_event events[MAX_EVENTS];
	int			stop = 0;

	if (argc < 2 || argc > 4)
	{
		fprintf(stderr, "usage: " PROGNAME " PORTFILE [PORT [STATSFILE]]\n");
		return 2;
	}
	portfile = argv[1];
	if (argc >= 3)
	{
		char	   *e;
		long		v = strtol(argv[2], &e, 10);

		if (*argv[2] == '\0' || *e != '\0' || v < 0 || v > 65535)
		{
			fprintf(stderr, PROGNAME ": invalid port \"%s\"\n", argv[2]);
			return 2;
		}
		port = (int) v;
	}
	if (argc == 4)
		statsfile = argv[3];

	/* as many connections as we are allowed */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0)
		die("sigprocmask");
	signal(SIGPIPE, SIG_IGN);
	sigsrc.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigsrc.fd < 0)
		die("signalfd");

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	port = open_listener(port);
	epoll_set(EPOLL_CTL_ADD, &listener, EPOLLIN);
	epoll_set(EPOLL_CTL_ADD, &sigsrc, EPOLLIN);

	if (statsfile != NULL)
	{
		struct itimerspec its = {{1, 0}, {1, 0}};

		timersrc.fd = timerfd_create(CLOCK_MONOTONIC,
									 TFD_NONBLOCK | TFD_CLOEXEC);
		if (timersrc.fd < 0 || timerfd_settime(timersrc.fd, 0, &its, NULL) != 0)
			die("timerfd");
		epoll_set(EPOLL_CTL_ADD, &timersrc, EPOLLIN);
		write_stats();
	}

	snprintf(line, sizeof(line), "%d\n", port);
	if (write_file_atomic(portfile, line) != 0)
		die("could not write \"%s\"", portfile);

	while (!stop)
	{
		int			n = epoll_wait(epfd, events, MAX_EVENTS, -1);
		int			i;

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (i = 0; i < n; i++)
		{
			Source	   *src = events[i].data.ptr;

			switch (src->kind)
			{
				case SRC_LISTENER:
					accept_all();
					break;
				case SRC_SIGNAL:
					stop |= handle_signals();
					break;
				case SRC_TIMER:
					{
						uint64_t	ticks;

						if (read(timersrc.fd, &ticks, sizeof(ticks)) > 0)
							write_stats();
						break;
					}
				case SRC_CONN:
					{
						Conn	   *c = (Conn *) src;

						if (events[i].events & (EPOLLERR | EPOLLHUP) &&
							!(events[i].events & (EPOLLIN | EPOLLOUT)))
							conn_close(c);
						else if (c->want_out)
							conn_progress(c);
						else
							conn_readable(c);
						break;
					}
			}
		}
	}

	report();
	return 0;
}

#!/usr/bin/env python3
"""Programmable HTTP/1.1 endpoint for the outbox http sink tests.

Usage:
    python3 test/http_server.py --port-file FILE [--port N] [--log FILE]

Listens on 127.0.0.1 (port 0, the default, picks an ephemeral port), writes
the port number to FILE once it accepts connections (FILE.tmp, then renamed,
so a reader never sees a partial file) and serves until SIGTERM or SIGINT.
Python 3 standard library only.  Connections are kept alive (HTTP/1.1),
every response carries Content-Length, one thread serves each connection.

Every request outside /_admin/ is recorded and answered according to the
mode of its path (the URL without the query string).  A path without a mode
answers 200 {"ok": true}; any method is accepted.  The outbox sink POSTs
bodies such as

    {"id": 42, "topic": "orders", "key": "order-42", "payload": {...},
     "headers": {...} or null, "created_at": "...", "attempt": 1}

with a header "Idempotency-Key: 42".

Admin endpoints (JSON in and out; they are not recorded):

  POST /_admin/mode    {"path": "/a", ...}: replace the mode of /a.  Fields
                       (all optional except path; defaults shown):
      status: 200        status of the answer; 2xx answers carry
                         {"ok": true}, others {"error": "..."}
      delay_ms: 0        sleep this long before answering (client timeouts)
      retry_after: null  if set, add "Retry-After: <value>" to the answer
      fail_times: null   if an integer n, only the next n requests get the
                         behaviour above (status, delay_ms, retry_after,
                         close); after that the path answers a plain 200
      poison: null       if a string, a request whose raw body contains it
                         gets 400 (not counted against fail_times); the
                         others are answered as described above
      kill_match: null   if a string, and kill_pid is set, the first request
      kill_pid: null     whose raw body contains it makes the server send
      kill_signal: 9     os.kill(kill_pid, kill_signal) before anything else
                         (delay included); the trigger then disarms (post
                         the mode again to re-arm).  The request is then
                         answered normally, if the client is still there
      close: false       if true, close the connection without answering
                         (recorded with "status": null)
                       Posting {"path": "/a"} alone restores the default.
  GET  /_admin/mode                      {path: mode} of all modes set
  POST /_admin/reset                     forget all modes and all requests
  GET  /_admin/received[?path=/a]        list of recorded requests, in
                                         arrival order, for /a (or all)
  GET  /_admin/count[?path=/a][&status=200]   {"count": n}

A recorded request is
    {"path": "/a", "method": "POST", "status": 200, "t": <unix time>,
     "body": <parsed JSON, or the raw text if not JSON, or null if empty>,
     "idempotency_key": "42" or null, "killed": true|absent}
where "t" is the arrival time and "status" the status sent (non-2xx answers
are recorded too).  With --log FILE the same object is also appended to
FILE as one JSON line per request.
"""

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MODE_DEFAULTS = {
    "status": 200,
    "delay_ms": 0,
    "retry_after": None,
    "fail_times": None,
    "poison": None,
    "kill_pid": None,
    "kill_signal": 9,
    "kill_match": None,
    "close": False,
}


class State:
    """Modes and received requests, shared by all handler threads."""

    def __init__(self, log_path=None):
        self.lock = threading.Lock()
        self.modes = {}
        self.received = []
        self.log = open(log_path, "a", buffering=1) if log_path else None

    def reset(self):
        with self.lock:
            self.modes.clear()
            self.received.clear()

    def set_mode(self, path, mode):
        with self.lock:
            self.modes[path] = mode

    def get_modes(self):
        with self.lock:
            return {p: dict(m) for p, m in self.modes.items()}

    def decide(self, path, raw):
        """Return (mode, failing, poisoned, kill) for one incoming request.

        Done under the lock, so that fail_times counts down and the kill
        trigger fires exactly once however many requests arrive together.
        """
        with self.lock:
            mode = self.modes.get(path)
            if mode is None:
                return MODE_DEFAULTS, False, False, None
            kill = None
            if (mode["kill_match"] is not None and mode["kill_pid"] is not None
                    and mode["kill_match"].encode() in raw):
                kill = (mode["kill_pid"], mode["kill_signal"])
                mode["kill_pid"] = None             # one shot
            poisoned = (mode["poison"] is not None
                        and mode["poison"].encode() in raw)
            failing = not poisoned
            if failing and mode["fail_times"] is not None:
                if mode["fail_times"] > 0:
                    mode["fail_times"] -= 1
                else:
                    failing = False
            return dict(mode), failing, poisoned, kill

    def record(self, entry):
        line = json.dumps(entry) if self.log else None
        with self.lock:
            self.received.append(entry)
            if line is not None:
                self.log.write(line + "\n")

    def select(self, path=None, status=None):
        with self.lock:
            return [e for e in self.received
                    if (path is None or e["path"] == path)
                    and (status is None or e["status"] == status)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pg_dtx-test-http"
    # Headers and body go out in two writes: without TCP_NODELAY the second
    # one waits for the client's delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):
        pass

    # -- plumbing --------------------------------------------------------

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass                        # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def reply(self, status, obj, extra_headers=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        t = time.time()
        try:
            raw = self.read_body()
        except (ValueError, OSError):
            self.send_error(400, "bad request body")
            self.close_connection = True
            return
        url = urlsplit(self.path)
        if url.path.startswith("/_admin/"):
            self.admin(url, raw)
        else:
            self.serve(url.path, raw, t)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any

    # -- the programmable endpoint ----------------------------------------

    def serve(self, path, raw, t):
        state = self.server.state
        mode, failing, poisoned, kill = state.decide(path, raw)
        entry = {"path": path, "method": self.command, "status": None,
                 "t": t, "body": parse_body(raw),
                 "idempotency_key": self.headers.get("Idempotency-Key")}
        if kill is not None:
            try:
                os.kill(*kill)
                entry["killed"] = True
            except OSError as e:
                entry["killed"] = False
                entry["kill_error"] = str(e)

        if failing and mode["delay_ms"]:
            time.sleep(mode["delay_ms"] / 1000.0)

        if failing and mode["close"]:
            state.record(entry)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return

        headers = []
        if poisoned:
            status = 400
        elif failing:
            status = int(mode["status"])
            if mode["retry_after"] is not None:
                headers.append(("Retry-After", str(mode["retry_after"])))
        else:
            status = 200
        entry["status"] = status
        state.record(entry)
        if 200 <= status < 300:
            self.reply(status, {"ok": True}, headers)
        elif poisoned:
            self.reply(status, {"error": "poison message"}, headers)
        else:
            self.reply(status, {"error": "status %d by mode" % status},
                       headers)

    # -- admin ------------------------------------------------------------

    def admin(self, url, raw):
        state = self.server.state
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        what = url.path[len("/_admin/"):].rstrip("/")
        try:
            if what == "mode" and self.command == "POST":
                req = json.loads(raw or b"{}")
                if not isinstance(req, dict) or not isinstance(
                        req.get("path"), str):
                    raise ValueError('body must be {"path": "/...", ...}')
                unknown = set(req) - set(MODE_DEFAULTS) - {"path"}
                if unknown:
                    raise ValueError("unknown fields: %s"
                                     % ", ".join(sorted(unknown)))
                mode = dict(MODE_DEFAULTS)
                mode.update({k: v for k, v in req.items()
                             if k != "path" and v is not None})
                for k in ("status", "delay_ms", "kill_signal"):
                    mode[k] = int(mode[k])
                for k in ("fail_times", "kill_pid"):
                    if mode[k] is not None:
                        mode[k] = int(mode[k])
                state.set_mode(req["path"], mode)
                self.reply(200, {"ok": True, "path": req["path"],
                                 "mode": mode})
            elif what == "mode" and self.command == "GET":
                self.reply(200, state.get_modes())
            elif what == "reset" and self.command == "POST":
                state.reset()
                self.reply(200, {"ok": True})
            elif what == "received" and self.command == "GET":
                self.reply(200, state.select(query.get("path")))
            elif what == "count" and self.command == "GET":
                status = query.get("status")
                n = len(state.select(query.get("path"),
                                     int(status) if status else None))
                self.reply(200, {"count": n})
            else:
                self.reply(404, {"error": "no admin endpoint %s %s"
                                 % (self.command, url.path)})
        except (ValueError, TypeError) as e:
            self.reply(400, {"error": str(e)})


def parse_body(raw):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # A client that gave up (timeout, killed by a kill_match) is part of
        # the tests; anything else still gets the default traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(
        description="Programmable HTTP/1.1 test endpoint (see module doc).")
    ap.add_argument("--port-file", required=True,
                    help="write the listening port here")
    ap.add_argument("--port", type=int, default=0,
                    help="port to bind on 127.0.0.1 (default: ephemeral)")
    ap.add_argument("--log", help="append one JSON line per request here")
    args = ap.parse_args()

    # Block the stop signals in every thread and collect them with sigwait()
    # in the main one, so that shutdown never races with a handler.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    server = Server(("127.0.0.1", args.port), Handler)
    server.state = State(args.log)
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(tmp, args.port_file)

    signal.sigwait(stop_signals)
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A fake PostgreSQL server (protocol v3) for pg_dtx's hostile-participant tests.

Usage:
    python3 test/fake_pg.py --mode MODE --port-file FILE [--log FILE]

Listens on 127.0.0.1 (an ephemeral port), writes the port number to FILE
once it accepts connections (FILE.tmp, then renamed) and serves until
SIGTERM or SIGINT.  Python 3 standard library only; one thread per
connection.

Every connection is accepted without a password: SSLRequest and
GSSENCRequest are refused with 'N', a CancelRequest is read and the
connection closed (as PostgreSQL does).  Then, by MODE:

  copy-out           AuthenticationOk, ParameterStatus (server_version 15.0,
                     client_encoding UTF8, ...), BackendKeyData,
                     ReadyForQuery; then every query is answered with a
                     CopyOutResponse and nothing more (the connection stays
                     in COPY OUT until the client leaves)
  copy-in            the same with a CopyInResponse (CopyData, CopyDone and
                     CopyFail from the client are read and ignored)
  silent             the same start, then no query is ever answered
  silent-after-auth  AuthenticationOk, then nothing (no ReadyForQuery)

In the first three modes, pg_dtx's session set-up (the query that starts
with "SET datestyle = ISO") is answered like PostgreSQL would (three SET,
then one row "10" for max_prepared_transactions), so that a cached
connection gets as far as the user's SQL; in the COPY modes any other
simple query that starts with "SET " is answered too (an outbox sink's
"SET synchronous_commit = on"), so that a sink's INSERT (extended protocol:
answered at its Sync) is what gets the COPY response.  With --log FILE one line per
event ("connect", "cancel", "query <text>", "close") is appended to FILE.
"""

import argparse
import os
import signal
import socket
import struct
import sys
import threading

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_V3 = 196608

log_lock = threading.Lock()
log_file = None


def log(event):
    if log_file is None:
        return
    with log_lock:
        with open(log_file, 'a', encoding='utf-8', errors='replace') as f:
            f.write(event.replace('\n', ' ') + '\n')


def recv_exact(sock, n):
    buf = b''
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def msg(kind, body=b''):
    return kind + struct.pack('!i', len(body) + 4) + body


def cstr(s):
    return s.encode() + b'\0'


def ready():
    return msg(b'Z', b'I')


def setup_answer():
    out = b''
    for _ in range(3):
        out += msg(b'C', cstr('SET'))
    # RowDescription: one text column
    out += msg(b'T', struct.pack('!h', 1) + cstr('current_setting')
               + struct.pack('!ihihih', 0, 0, 25, -1, -1, 0))
    out += msg(b'D', struct.pack('!h', 1) + struct.pack('!i', 2) + b'10')
    out += msg(b'C', cstr('SELECT 1'))
    out += ready()
    return out


def copy_response(kind):
    # overall format text, one column, text
    return msg(kind, struct.pack('!bhh', 0, 1, 0))


def serve(conn, mode):
    try:
        # startup, after any number of SSL/GSS requests
        while True:
            (length,) = struct.unpack('!i', recv_exact(conn, 4))
            body = recv_exact(conn, length - 4)
            (code,) = struct.unpack('!i', body[:4])
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                conn.sendall(b'N')
                continue
            if code == CANCEL_REQUEST:
                log('cancel')
                return
            break
        log('connect')
        conn.sendall(msg(b'R', struct.pack('!i', 0)))
        if mode == 'silent-after-auth':
            while conn.recv(8192):
                pass
            return
        start = b''
        for k, v in (('server_version', '15.0'), ('client_encoding', 'UTF8'),
                     ('server_encoding', 'UTF8'), ('DateStyle', 'ISO, MDY'),
                     ('integer_datetimes', 'on'),
                     ('standard_conforming_strings', 'on')):
            start += msg(b'S', cstr(k) + cstr(v))
        start += msg(b'K', struct.pack('!ii', os.getpid(), 4242))
        start += ready()
        conn.sendall(start)
        while True:
            kind = recv_exact(conn, 1)
            (length,) = struct.unpack('!i', recv_exact(conn, 4))
            body = recv_exact(conn, length - 4)
            if kind == b'X':
                return
            if kind not in (b'Q', b'S'):
                continue        # Parse, Bind, Describe, Execute, Flush, COPY
            text = body[:-1].decode('utf-8', 'replace') if kind == b'Q' else '<sync>'
            log('query ' + text)
            if text.startswith('SET datestyle = ISO'):
                conn.sendall(setup_answer())
            elif text.startswith('SET ') and mode != 'silent':
                conn.sendall(msg(b'C', cstr('SET')) + ready())
            elif mode == 'copy-out':
                conn.sendall(copy_response(b'H'))
            elif mode == 'copy-in':
                conn.sendall(copy_response(b'G'))
            # silent: no answer, ever
    except (EOFError, OSError):
        pass
    finally:
        log('close')
        try:
            conn.close()
        except OSError:
            pass


def main():
    global log_file
    ap = argparse.ArgumentParser()
    ap.add_argument('--mode', required=True,
                    choices=['copy-out', 'copy-in', 'silent', 'silent-after-auth'])
    ap.add_argument('--port-file', required=True)
    ap.add_argument('--log')
    args = ap.parse_args()
    log_file = args.log

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(('127.0.0.1', 0))
    srv.listen(64)
    tmp = args.port_file + '.tmp'
    with open(tmp, 'w') as f:
        f.write('%d\n' % srv.getsockname()[1])
    os.rename(tmp, args.port_file)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn, args.mode), daemon=True).start()
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    main()

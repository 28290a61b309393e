"""The server's HTTP listener: the web view, its JSON API and ``/metrics``.

Driven by :class:`lpm.server.shell.Server`'s ``selectors`` loop like the other
listeners: non-blocking sockets, one request per connection
(:mod:`lpm.server.http`), nothing that waits on a peer.  Routes:

====================================  ==========================================
``GET /``, ``/app.js``, ``/app.css``  the page (:mod:`lpm.web`), no build step
``GET /api/sources``                  what ``sources`` answers over TCP
``GET /api/state?source=N``           a source's snapshot (a ``STATE`` frame's JSON)
``GET /api/flame?source=N&seconds=S`` its samples as a flame tree, the last S
                                      seconds or (0) the whole run
``GET /api/history?source=N``         its figures over the whole run, bounded
                                      (:mod:`lpm.server.history`): what a page
                                      opened late puts before its own points
``GET /api/calls?source=N&most=M``    its traced call tree (``lpm run --trace``), the M
                                      busiest paths, in the flame tree's shape
``GET /api/stream``                   server-sent events: ``update`` every
                                      :attr:`WebListener.interval` with every
                                      source and its snapshot (built once per
                                      update, shared by every stream)
``POST /api/pause?source=N``          the ``pause`` and ``resume`` service
``POST /api/resume?source=N``         requests, sent to the program's leech
``GET /metrics``                      Prometheus (:mod:`lpm.server.metrics`)
====================================  ==========================================

A stream that cannot keep up (more than :data:`STREAM_BACKLOG` bytes unsent)
is closed: the page reconnects and starts from the next update.
"""

from __future__ import annotations

import hmac
import json
import logging
import selectors
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import tls, web
from . import metrics
from .http import HttpError, Request, RequestParser, response, stream_event, stream_head
from .hub import Hub
from .source import Source

log = logging.getLogger("lpm.server")

#: Unsent bytes a stream may have before it is closed.
STREAM_BACKLOG = 8 << 20
#: Threads per source in a stream update (the busiest; /api/state has all):
#: a thousand threads in each of 20 sources made 3.4 MB per update per page.
STREAM_THREADS = 100
#: Connections at once; more are refused.
MAX_CONNECTIONS = 256
JSON = "application/json"


@dataclass
class _Conn:
    sock: socket.socket
    peer: str
    parser: RequestParser = field(default_factory=RequestParser)
    out: bytearray = field(default_factory=bytearray)
    streaming: bool = False
    closing: bool = False  #: close once ``out`` is sent
    handshake: int = 0  #: while TLS is being set up: the selector events it waits for


class WebListener:
    """HTTP clients of one server.

    Args:
        hub: the server's hub.
        host, port: where to listen.
        transports: counts of connected clients by transport, for ``/metrics``.
        interval: seconds between stream updates.
        tls: serve HTTPS with this context (:mod:`lpm.tls`).
    """

    def __init__(self, hub: Hub, host: str, port: int, transports: Callable[[], Dict[str, int]],
                 interval: float = 1.0, token: Optional[bytes] = None, tls: Optional[ssl.SSLContext] = None) -> None:
        self.hub = hub
        self.tls = tls
        #: With a token every request must carry it: ``Authorization: Bearer``
        #: (Prometheus' ``authorization`` setting), the cookie the page gets
        #: when opened once as ``/?token=...``, or that query on any URL.
        self.token = token
        self.transports = transports
        self.interval = interval
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.address: Tuple[str, int] = self.sock.getsockname()[:2]
        self.conns: Dict[int, _Conn] = {}  # fd -> connection
        #: Called with a connection's socket just before it is closed (the
        #: loop stops watching it, so its descriptor can be reused).
        self.on_close: Callable[[socket.socket], None] = lambda sock: None
        self._next_update = 0.0
        self._refused = 0
        self.updates = 0

    # -- the loop's calls -----------------------------------------------------------

    def accept(self) -> List[socket.socket]:
        """New connections' sockets, for the loop to watch."""
        socks: List[socket.socket] = []
        while True:
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return socks
            except OSError as err:
                log.warning("http: accept failed: %s", err)
                return socks
            if len(self.conns) >= MAX_CONNECTIONS:
                if not self._refused:
                    log.warning("http: %d connections open; more are refused (said once)", MAX_CONNECTIONS)
                self._refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            sock = tls.wrap_server(self.tls, sock)
            self.conns[sock.fileno()] = _Conn(sock, f"{peer[0]}:{peer[1]}",
                                              handshake=selectors.EVENT_READ if self.tls else 0)
            socks.append(sock)

    def read(self, fd: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        if conn.handshake and not self._handshake(fd, conn):
            return
        try:
            data = tls.recv(conn.sock, 1 << 16)
        except OSError:
            data = b""
        if data is None:
            return
        if not data:
            self.close(fd)
            return
        if conn.streaming or conn.closing:
            return  # a browser says nothing more on an event stream; a request after ours is ignored
        try:
            request = conn.parser.feed(data)
        except Exception as err:  # HttpError, or a bug the bytes found: either way that peer only
            if not isinstance(err, HttpError):
                log.exception("http: %s: internal error parsing a request", conn.peer)
                err = HttpError(400, "bad request")
            self._reply(conn, response(err.status, (err.message + "\n").encode()))
            return
        if request is not None:
            try:
                self._handle(conn, request)
            except Exception:  # a bug the request found: a 500 for it, the server stays
                log.exception("http: %s: internal error on %s %s", conn.peer, request.method, request.path)
                conn.out.clear()
                self._reply(conn, response(500, b"internal error\n"))

    def write(self, fd: int) -> None:
        conn = self.conns.get(fd)
        if conn is not None and conn.handshake:
            if self._handshake(fd, conn):
                self.read(fd)  # a request that came with the handshake's end
            return
        if conn is None or not conn.out:
            return
        try:
            sent = conn.sock.send(conn.out)
        except tls.WOULD_BLOCK:
            return
        except OSError:
            self.close(fd)
            return
        del conn.out[:sent]
        if not conn.out and conn.closing:
            self.close(fd)

    def wants_write(self, fd: int) -> bool:
        conn = self.conns.get(fd)
        return conn is not None and not conn.handshake and bool(conn.out)

    def events(self, fd: int) -> int:
        """The selector events connection ``fd`` waits for."""
        conn = self.conns.get(fd)
        if conn is not None and conn.handshake:
            return conn.handshake
        return selectors.EVENT_READ | (selectors.EVENT_WRITE if self.wants_write(fd) else 0)

    def _handshake(self, fd: int, conn: _Conn) -> bool:
        """Go on with a connection's TLS handshake; True once it is done."""
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.handshake = tls.handshake(conn.sock)
        except OSError as err:
            log.info("http: %s: TLS handshake failed: %s", conn.peer, tls.describe(err))
            self.close(fd)
            return False
        return not conn.handshake

    def tick(self, now: float) -> None:
        """Send the streams their update when one is due."""
        if now < self._next_update:
            return
        self._next_update = now + self.interval
        streams = [c for c in self.conns.values() if c.streaming]
        if not streams:
            return
        payload = stream_event("update", json.dumps(self._update(), separators=(",", ":")))
        self.updates += 1
        for conn in streams:
            if len(conn.out) > STREAM_BACKLOG:
                log.info("http: %s: event stream %d bytes behind, closed", conn.peer, len(conn.out))
                self.close(conn.sock.fileno())
                continue
            conn.out += payload

    def close(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        if conn is not None:
            self.on_close(conn.sock)
            conn.sock.close()

    def close_all(self) -> None:
        for fd in list(self.conns):
            self.close(fd)
        self.sock.close()

    # -- routes ---------------------------------------------------------------------

    def _handle(self, conn: _Conn, request: Request) -> None:
        try:
            if self.token is not None and not self._authorized(request):
                raise HttpError(401, "this server needs its token: open /?token=TOKEN once, "
                                     "or send Authorization: Bearer TOKEN")
            if self.token is not None and request.path == "/" and "token" in request.query:
                # The page, its fetches and its event stream carry a cookie
                # from now on; the token leaves the address bar.
                cookie = f"lpm_token={request.query['token']}; HttpOnly; SameSite=Strict; Path=/"
                if self.tls is not None:
                    cookie += "; Secure"
                self._reply(conn, response(303, b"", headers=[("Location", "/"), ("Set-Cookie", cookie)]))
                return
            if request.method == "POST" and request.path in ("/api/pause", "/api/resume"):
                self._reply(conn, self._control(request, request.path.rsplit("/", 1)[1]))
                return
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405, f"{request.method} is not allowed on {request.path}")
            if request.path == "/api/stream":
                conn.out += stream_head() + stream_event("update", json.dumps(self._update(), separators=(",", ":")))
                conn.streaming = True
                return
            self._reply(conn, self._get(request))
        except HttpError as err:
            self._reply(conn, _json_response(err.status, {"error": err.message}))

    def _get(self, request: Request) -> bytes:
        path = request.path
        if path == "/metrics":
            clients = dict(self.transports(), web=sum(1 for c in self.conns.values() if c.streaming))
            return response(200, metrics.render(self.hub, clients), metrics.CONTENT_TYPE)
        if path == "/api/sources":
            return _json_response(200, [s.info() for s in self.hub.sources.values()])
        if path == "/api/state":
            return _json_response(200, _snapshot(self._source(request)))
        if path == "/api/flame":
            seconds = _integer(request, "seconds", 0, 0, 3600)
            return _json_response(200, self._source(request).state.stacks.tree(seconds))
        if path == "/api/history":
            return _json_response(200, self._source(request).state.history_json())
        if path == "/api/calls":
            most = _integer(request, "most", 2000, 1, 100_000)
            return _json_response(200, self._source(request).state.call_tree(most))
        name = "index.html" if path == "/" else path.lstrip("/")
        asset = web.asset(name)
        if asset is None:
            raise HttpError(404, f"nothing at {path}")
        return response(200, asset[0], asset[1])

    def _authorized(self, request: Request) -> bool:
        assert self.token is not None
        offered: List[str] = []
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            offered.append(auth[7:].strip())
        for part in request.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "lpm_token":
                offered.append(value)
        if "token" in request.query:
            offered.append(request.query["token"])
        # Every candidate compared in constant time, and all of them.
        return any([hmac.compare_digest(o.encode("utf-8", "replace"), self.token) for o in offered])

    def _control(self, request: Request, op: str) -> bytes:
        source = self._source(request)
        if self.hub.control is None:
            raise HttpError(409, "this server forwards no commands")
        problem = self.hub.control(source, op)
        if problem is not None:
            raise HttpError(409, problem)
        source.paused = op == "pause"
        return _json_response(200, {"ok": True, "source": source.id, "sent": op})

    def _source(self, request: Request) -> Source:
        number = _integer(request, "source", None, 0, 1 << 32)
        source = self.hub.sources.get(number)
        if source is None:
            raise HttpError(404, f"no source {number}")
        return source

    def _update(self) -> Dict[str, Any]:
        sources = list(self.hub.sources.values())
        return {"time": time.time(), "sources": [s.info() for s in sources],
                "states": {str(s.id): _snapshot(s, STREAM_THREADS) for s in sources}}

    def _reply(self, conn: _Conn, data: bytes) -> None:
        conn.out += data
        conn.closing = True


def _snapshot(source: Source, max_threads: Optional[int] = None) -> Dict[str, Any]:
    """A ``STATE`` frame's JSON; with ``max_threads``, only the threads that
    used the most CPU (``threads_total`` says how many there are)."""
    state = source.state.snapshot()
    threads = state["threads"]
    state["threads_total"] = len(threads)
    if max_threads is not None and len(threads) > max_threads:
        busiest = sorted(threads, key=lambda t: t.get("cpu_ns") or 0, reverse=True)[:max_threads]
        state["threads"] = sorted(busiest, key=lambda t: t["id"])
    return {"source": source.id, "name": source.name, "info": source.info(), "state": state}


def _integer(request: Request, name: str, default: Optional[int], low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        if default is None:
            raise HttpError(400, f"{name}= is required")
        return default
    try:
        value = int(text)
    except ValueError:
        raise HttpError(400, f"{name}={text[:20]!r} is not a number") from None
    if not low <= value <= high:
        raise HttpError(400, f"{name}={value} is outside {low}..{high}")
    return value


def _json_response(status: int, body: Any) -> bytes:
    return response(status, json.dumps(body).encode("utf-8"), JSON)


__all__ = ["WebListener", "STREAM_BACKLOG"]

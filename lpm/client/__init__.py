"""Connect to ``python -m lpm server`` and receive its sources live.

>>> from lpm.client import Client
>>> def event(source: int, e: Event) -> None: print(source, e.describe())
>>> client = Client(("127.0.0.1", 8242), on_event=event).start()   # a thread of its own
>>> client.call("sources")                                          # any service request
>>> client.close()

Callbacks (each optional; they run in the client's thread, or on an asyncio
loop given with ``loop=``): ``on_header(source, header)``,
``on_event(source, event)`` with typed events, ``on_service(message)`` for
notices (and errors that answer nothing), ``on_state(snapshot)`` with the
typed :class:`~lpm.client.model.Snapshot`, ``on_exit(error)`` once when the
client stops for good (``None`` after :meth:`Client.close`).

When the connection drops, the client reconnects with backoff and
subscribes again, so it resumes with a fresh header and snapshot; requests
in flight fail with :class:`ConnectionError`.  From asyncio, ``await
client.acall(...)`` does not block the loop.

``transport="udp"`` speaks lpm's reliable UDP transport to a server's
``--udp`` listener instead (:mod:`lpm.client.udp`): the same callbacks and
requests; events lost on the way are not repaired but counted
(:attr:`Client.events_lost`) and reported to ``on_service`` as ``lost``
notices.
"""

from __future__ import annotations

import asyncio
import dataclasses
import select
import socket
import ssl
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..udp import Config as UdpConfig  # not "udp": the submodule lpm.client.udp would take that name
from ..errors import LpmError, ProtocolError
from ..protocol import service
from ..eventlog.events import Event
from ..eventlog.reader import Header
from .model import Snapshot
from ..protocol.frames import Kind
from .protocol import ClientProtocol, EventMessage, HeaderMessage, Message, RawMessage, ServiceMessage, StateMessage
from .udp import UdpLink

__all__ = ["Client", "ServiceError", "Snapshot"]

DEFAULT_ADDRESS = ("127.0.0.1", 8242)


class ServiceError(LpmError):
    """The server answered a request with an error."""


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Optional[Dict[str, Any]] = None
        self.error: Optional[BaseException] = None


class Client:
    """A connection to a server, kept up, with callbacks.

    Args:
        address: (host, port) of the server.
        subscribe: the ``subscribe`` request's arguments, sent on every
            (re)connection; None subscribes to nothing.
        reconnect: reconnect after the connection drops (else stop).
        backoff: first delay, factor and longest delay between attempts (s).
        loop: run the callbacks on this asyncio loop instead.
    """

    def __init__(
        self,
        address: Tuple[str, int] = DEFAULT_ADDRESS,
        *,
        on_header: Optional[Callable[[int, Header], None]] = None,
        on_event: Optional[Callable[[int, Event], None]] = None,
        on_service: Optional[Callable[[Dict[str, Any]], None]] = None,
        on_state: Optional[Callable[[Snapshot], None]] = None,
        on_exit: Optional[Callable[[Optional[BaseException]], None]] = None,
        on_raw: Optional[Callable[[int, bool, bytes], None]] = None,
        subscribe: Optional[Dict[str, Any]] = None,
        reconnect: bool = True,
        backoff: Tuple[float, float, float] = (0.1, 2.0, 5.0),
        connect_timeout: float = 5.0,
        loop: Optional[asyncio.AbstractEventLoop] = None,
        transport: str = "tcp",
        udp_config: Optional[UdpConfig] = None,
        token: Optional[bytes] = None,
        tls: Optional[ssl.SSLContext] = None,
    ) -> None:
        if transport not in ("tcp", "udp"):
            raise ValueError(f"transport {transport!r} is not tcp or udp")
        if tls is not None and transport != "tcp":
            raise ValueError("TLS is for the TCP transport (UDP packets carry an HMAC of their own)")
        self.address = address
        self.on_header = on_header
        self.on_event = on_event
        self.on_service = on_service
        self.on_state = on_state
        self.on_exit = on_exit
        self.on_raw = on_raw  #: (source, is_header, bytes): set, events arrive undecoded
        self.subscription = subscribe
        self.reconnect = reconnect
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.loop = loop
        self.connected = threading.Event()
        self.connections = 0
        self.transport = transport
        self.token = token
        #: Over TCP, TLS with this context (:func:`lpm.tls.client_context`),
        #: the server's certificate checked against the address's host.
        self.tls = tls
        if transport == "udp" and token is not None:
            udp_config = dataclasses.replace(udp_config or UdpConfig(), token=token)
        self.udp_config = udp_config
        #: Over UDP: events that arrived, and that the transport reported
        #: lost, in all connections (the server's count of events sent to
        #: this client is their sum: the "client" request).
        self.events_received = 0
        self.events_lost = 0
        #: Why the last connection failed or dropped (for "cannot reach" messages).
        self.last_error: Optional[BaseException] = None
        self._sock: Optional[socket.socket] = None
        self._link: Optional[UdpLink] = None
        self._server_id: Optional[int] = None
        self._protocol = ClientProtocol()
        self._send_lock = threading.Lock()
        self._pending: Dict[int, _Pending] = {}
        self._closing = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- life ------------------------------------------------------------------

    def start(self) -> Client:
        """Run in a daemon thread of its own; returns self."""
        self._thread = threading.Thread(target=self.run, name="lpm-client", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop for good; on_exit(None) follows."""
        self._closing.set()
        link = self._link
        if link is not None:
            link.close()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def run(self) -> None:
        """Connect, receive, reconnect, until :meth:`close` (or a drop without ``reconnect``)."""
        delay = self.backoff[0]
        error: Optional[BaseException] = None
        while not self._closing.is_set():
            try:
                self._connect()
                delay = self.backoff[0]
                self._receive()
                error = None
            except (OSError, ProtocolError) as err:
                error = self.last_error = err
            finally:
                self._disconnect(error)
            if self._closing.is_set() or not self.reconnect:
                break
            self._closing.wait(delay)
            delay = min(delay * self.backoff[1], self.backoff[2])
        self._dispatch(self.on_exit, None if self._closing.is_set() else error)

    # -- requests ----------------------------------------------------------------

    def call(self, op: str, timeout: float = 10.0, **args: Any) -> Any:
        """Send a service request and wait for its reply; the reply's result.

        Raises:
            ServiceError: the server answered with an error.
            ConnectionError: not connected, or the connection dropped first.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        if not self.connected.wait(timeout):
            raise ConnectionError(f"not connected to {self.address[0]}:{self.address[1]}")
        id_, data = self._protocol.request(op, **args)
        pending = self._pending[id_] = _Pending()
        try:
            self._send(data)
        except ConnectionError:
            self._pending.pop(id_, None)
            raise
        if not pending.done.wait(timeout):
            self._pending.pop(id_, None)
            raise TimeoutError(f"no answer to {op} within {timeout} s")
        if pending.error is not None:
            raise pending.error
        assert pending.reply is not None
        if pending.reply.get("type") == "error":
            raise ServiceError(str(pending.reply.get("error")))
        return pending.reply.get("result")

    async def acall(self, op: str, timeout: float = 10.0, **args: Any) -> Any:
        """:meth:`call` from asyncio, without blocking the loop."""
        return await asyncio.to_thread(self.call, op, timeout, **args)

    # -- the connection ------------------------------------------------------------

    def _connect(self) -> None:
        # One protocol per connection, made first: the auth request and the
        # ones after it draw their ids from it, so no reply is taken for another's.
        self._protocol = ClientProtocol(raw=self.on_raw is not None)
        if self.transport == "udp":
            link = UdpLink(self.address, self.udp_config, last_server_id=self._server_id)
            link.connect(self.connect_timeout)
            self._server_id = link.server_id
            self._link = link
            self._connected()
            return
        sock = socket.create_connection(self.address, timeout=self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=self.address[0])
            except BaseException:
                sock.close()
                raise
        if self.token is not None:
            self._authenticate(sock)
        sock.settimeout(None)
        self._sock = sock
        self._connected()

    def _authenticate(self, sock: socket.socket) -> None:
        """Answer the server's challenge (within the connect timeout)."""
        while True:
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the server closed the connection before its challenge")
            for m in self._protocol.feed(data):
                if isinstance(m, ServiceMessage) and m.message.get("notice") == "challenge":
                    assert self.token is not None
                    proof = service.proof(self.token, str(m.message["nonce"]))
                    _, request = self._protocol.request("auth", proof=proof)
                    sock.sendall(request)
                    return

    def _connected(self) -> None:
        self.connections += 1
        self.connected.set()
        if self.subscription is not None:
            _, data = self._protocol.request("subscribe", **self.subscription)
            self._send(data)

    def _send(self, data: bytes) -> None:
        link = self._link
        if link is not None:
            link.send(data)
            return
        sock = self._sock
        if sock is None:
            raise ConnectionError("not connected")
        with self._send_lock:
            try:
                sock.sendall(data)
            except OSError as err:
                # The receiving thread may have dropped this socket since it
                # was read above (the server closed it): EBADF, EPIPE, a TLS
                # error; to the caller all of them are a lost connection.
                if isinstance(err, ConnectionError):
                    raise
                raise ConnectionError(f"connection lost: {err}") from err

    def _receive(self) -> None:
        link = self._link
        if link is not None:
            counted = 0
            while not self._closing.is_set():
                frames, lost = link.poll(0.2)
                self.events_received += link.events_received - counted
                counted = link.events_received
                if lost:
                    self.events_lost += lost
                    self._dispatch(self.on_service, {"type": "notice", "notice": "lost", "transport": "udp",
                                                     "events": lost})
                for frame in frames:
                    self._deliver(self._protocol.feed(frame))
            return
        sock = self._sock
        assert sock is not None
        secure = sock if isinstance(sock, ssl.SSLSocket) else None
        while not self._closing.is_set():
            # TLS may hold decrypted bytes the kernel's buffer no longer shows.
            if not (secure is not None and secure.pending()):
                ready, _, _ = select.select([sock], [], [], 0.2)
                if not ready:
                    continue
            if secure is not None:
                # One TLS connection is not to be read and written at once
                # (OpenSSL's rule); the bytes are there, so this is short.
                with self._send_lock:
                    data = sock.recv(1 << 20)
            else:
                data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the server closed the connection")
            self._deliver(self._protocol.feed(data))

    def _disconnect(self, error: Optional[BaseException]) -> None:
        self.connected.clear()
        link, self._link = self._link, None
        if link is not None:
            link.close()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.error = ConnectionError(f"connection lost: {error}" if error else "connection closed")
            p.done.set()

    def _deliver(self, messages: List[Message]) -> None:
        for m in messages:
            if isinstance(m, EventMessage):
                self._dispatch(self.on_event, m.source, m.event)
            elif isinstance(m, HeaderMessage):
                self._dispatch(self.on_header, m.source, m.header)
            elif isinstance(m, RawMessage):
                self._dispatch(self.on_raw, m.source, m.kind is Kind.HEADER, m.payload)
            elif isinstance(m, StateMessage):
                self._dispatch(self.on_state, m.snapshot)
            elif isinstance(m, ServiceMessage):
                id_ = m.message.get("id")
                pending = self._pending.pop(id_, None) if isinstance(id_, int) else None
                if pending is not None and m.kind in ("reply", "error"):
                    pending.reply = m.message
                    pending.done.set()
                elif m.kind != "reply":
                    self._dispatch(self.on_service, m.message)

    def _dispatch(self, callback: Optional[Callable[..., None]], *args: Any) -> None:
        if callback is None:
            return
        if self.loop is not None:
            self.loop.call_soon_threadsafe(callback, *args)
        else:
            callback(*args)

"""The server's core, without sockets: sources in, clients out, service answered.

Sans-IO: the shell (:mod:`lpm.server.shell`) hands it bytes from sources and
clients and asks it for the bytes to write to each client; time comes in as
``now``.  Everything the protocol promises is decided here:

- A client that subscribes gets, per source, the header, then a state
  snapshot, then the live stream, starting at the next block boundary so its
  stream frames cleanly (a subscription with ``classes`` gets the events of
  those classes only, without block markers, whose sizes would then lie).
- Each client has a bounded queue (:attr:`HubLimits.queue_bytes`).  Event
  frames that do not fit are dropped and counted, and the client resumes at
  the next block boundary; when its queue has drained it gets a ``dropped``
  notice saying how many events of which source it lost.  A client whose
  queue still grows past twice the limit, or that sends anything the protocol
  does not allow, is disconnected with a reason.  No client can make a source
  or another client wait.
- Every request gets one reply or one error (:mod:`lpm.protocol.service`).
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional

from ..errors import ProtocolError
from ..protocol import service
from ..protocol.frames import Frame, FrameDecoder, Kind, encode_frame
from .source import Chunk, Source
from .state import Limits

log = logging.getLogger("lpm.server")

#: Sends a control line to a source's leech; returns an error text or None.
Control = Callable[[Source, str], Optional[str]]
#: Called with every chunk a source produced (the recorder).
Sink = Callable[[Source, Chunk], None]
#: The shell's reader of a live program's unredacted command line and
#: environment: a result, or raises LookupError with what went wrong.
Secrets = Callable[[Source], Dict[str, object]]


@dataclass(frozen=True)
class HubLimits:
    queue_bytes: int = 8 << 20  #: per client; event frames past it are dropped
    max_clients: int = 256
    max_sources: int = 1024
    frame_bytes: int = 1 << 20  #: largest frame a client may send
    state: Limits = field(default_factory=Limits)


@dataclass
class Subscription:
    classes: Optional[frozenset[int]]
    started: bool  #: events flow (after the first block boundary)
    resync: bool = False  #: waiting for a block after a drop: what is skipped counts as dropped


class Client:
    """One connected client: its queue, its subscriptions, its decoder."""

    def __init__(self, id: int, peer: str, frame_bytes: int) -> None:
        self.id = id
        self.peer = peer
        self.local = _loopback(peer)  #: on the server's machine (a loopback address)
        self.decoder = FrameDecoder(frame_bytes)
        self.out: Deque[bytes] = collections.deque()
        self.queued = 0
        self.subs: Dict[int, Subscription] = {}
        self.all_sources = False
        self.all_classes: Optional[frozenset[int]] = None
        self.dropped: Dict[int, int] = {}  #: events dropped since the last notice, by source
        self.dropped_total = 0
        self.sent_events = 0
        self.authenticated = True  #: the hub clears it when it has a token
        self.nonce = b""
        #: Counters the shell's transport keeps (UDP: events channel items), for the "client" op.
        self.transport: Dict[str, int] = {}
        self.close_reason: Optional[str] = None  #: set: write what is queued, then close


def loopback(host: str) -> bool:
    """Whether ``host`` (an address, or "localhost") is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback(peer: str) -> bool:
    """Whether a client's ``host:port`` (``udp host:port`` over UDP) is a loopback address."""
    return loopback(peer.removeprefix("udp ").rpartition(":")[0].strip("[]"))


class Hub:
    def __init__(self, limits: HubLimits | None = None, control: Control | None = None,
                 sink: Sink | None = None, token: bytes | None = None, secrets: Secrets | None = None) -> None:
        self.limits = limits or HubLimits()
        #: With a token, a client must first answer the challenge notice it
        #: gets on connecting: ``auth`` with ``proof`` = hex HMAC-SHA256 of
        #: the challenge's nonce under the token (so a recorded answer is no
        #: good on another connection); until then it gets nothing else.
        self.token = token
        self.control = control
        self.secrets = secrets
        self.sink = sink
        self.sources: Dict[int, Source] = {}
        self.clients: Dict[int, Client] = {}
        self._next_source = 1
        self._next_client = 1

    # -- sources ---------------------------------------------------------------

    def add_source(self, name: str, kind: str, path: str = "", pid: int | None = None) -> Source | None:
        """A new source; None (and a log line) when the server has its maximum."""
        if len(self.sources) >= self.limits.max_sources:
            log.warning("source %s refused: the server already has %d sources", name, len(self.sources))
            return None
        source = Source(self._next_source, name, kind, path, pid, self.limits.state)
        self._next_source += 1
        self.sources[source.id] = source
        for client in self.clients.values():
            if client.all_sources:
                self._subscribe(client, source, client.all_classes)
            self._notice(client, "source-added", source=source.id, name=name, source_kind=kind)
        return source

    def source_data(self, source: Source, data: bytes) -> None:
        for chunk in source.feed(data):
            self._forward(source, chunk)

    def source_closed(self, source: Source) -> None:
        for chunk in source.close():
            self._forward(source, chunk)
        for client in self.clients.values():  # as source-added: every client hears
            self._notice(client, "source-gone", source=source.id, name=source.name)

    def remove_source(self, source: Source) -> None:
        self.sources.pop(source.id, None)
        for client in self.clients.values():
            client.subs.pop(source.id, None)

    def _forward(self, source: Source, chunk: Chunk) -> None:
        if self.sink is not None:
            self.sink(source, chunk)
        for client in list(self.clients.values()):
            sub = client.subs.get(source.id)
            if sub is None or client.close_reason is not None:
                continue
            if chunk.header is not None:
                self._queue(client, encode_frame(Frame(Kind.HEADER, source.id, chunk.header)))
                sub.started, sub.resync = True, False  # a fresh stream starts at a block boundary
            if sub.classes is not None:
                raw, count = chunk.only(sub.classes)  # no block markers: no boundary to wait for
            elif not sub.started:
                found = chunk.from_first_block()
                if sub.resync:
                    skipped = chunk.count - (found[1] if found is not None else 0)
                    client.dropped[source.id] = client.dropped.get(source.id, 0) + skipped
                    client.dropped_total += skipped
                if found is None:
                    continue
                sub.started, sub.resync = True, False
                raw, count = found
            else:
                raw, count = chunk.raw, chunk.count
            if raw:
                self._queue_events(client, source, raw, count, sub)

    # -- clients -----------------------------------------------------------------

    def add_client(self, peer: str, authenticated: bool = False) -> Client | None:
        """A new connection; None (and a log line) when the server has its
        maximum.  ``authenticated``: its transport proved the token already
        (UDP's handshake), so it gets no challenge."""
        if len(self.clients) >= self.limits.max_clients:
            log.warning("client %s refused: the server already has %d clients", peer, len(self.clients))
            return None
        client = Client(self._next_client, peer, self.limits.frame_bytes)
        self._next_client += 1
        self.clients[client.id] = client
        if self.token is not None and not authenticated:
            client.authenticated = False
            client.nonce = os.urandom(16)
            self._queue(client, encode_frame(Frame(Kind.SERVICE, 0, service.notice("challenge", nonce=client.nonce.hex()))))
        return client

    def remove_client(self, client: Client) -> None:
        self.clients.pop(client.id, None)

    def client_data(self, client: Client, data: bytes) -> None:
        """Bytes from a client: every complete frame is handled."""
        if client.close_reason is not None:
            return
        client.decoder.feed(data)
        try:
            while True:
                frame = client.decoder.next_frame()
                if frame is None:
                    return
                if frame.kind is not Kind.SERVICE:
                    raise ProtocolError(0, f"a client sends service frames only, not {frame.kind.name}")
                self._service(client, frame.payload)
        except ProtocolError as err:
            self._queue(client, encode_frame(Frame(Kind.SERVICE, 0, service.error(None, err.reason))))
            self._close(client, f"protocol error: {err.reason}")

    def take_output(self, client: Client, limit: int = 1 << 20) -> bytes:
        """Up to about ``limit`` queued bytes for the client's socket."""
        return b"".join(self.take_frames(client, limit))

    def take_frames(self, client: Client, limit: int = 1 << 20) -> List[bytes]:
        """The same, as the frames they are (each encoded whole), for a
        transport that sends each kind its own way (UDP)."""
        parts: List[bytes] = []
        size = 0
        while client.out and size < limit:
            frame = client.out.popleft()
            parts.append(frame)
            size += len(frame)
        client.queued -= size
        if client.dropped and client.queued < self.limits.queue_bytes // 2:
            for source_id, events in client.dropped.items():
                self._notice(client, "dropped", source=source_id, events=events)
            client.dropped = {}
        return parts

    def _close(self, client: Client, reason: str) -> None:
        if client.close_reason is None:
            client.close_reason = reason
            log.info("client %s (%s): closing: %s", client.id, client.peer, reason)

    def _queue(self, client: Client, frame: bytes) -> None:
        client.out.append(frame)
        client.queued += len(frame)
        if client.queued > 2 * self.limits.queue_bytes:
            client.out.clear()
            client.queued = 0
            self._close(client, f"too slow: more than {2 * self.limits.queue_bytes} bytes queued")

    def _queue_events(self, client: Client, source: Source, raw: bytes, count: int, sub: Subscription) -> None:
        if client.queued + len(raw) > self.limits.queue_bytes:
            if not client.dropped_total:
                log.warning("client %d (%s) is slow: events past its queue of %d bytes are dropped "
                            "(it is told how many; said once)", client.id, client.peer, self.limits.queue_bytes)
            client.dropped[source.id] = client.dropped.get(source.id, 0) + count
            client.dropped_total += count
            # Unfiltered, what follows is mid-block: resume at the next block
            # (a stream without blocks has no boundary to wait for).
            sub.started = sub.classes is not None or not source.blocks
            sub.resync = not sub.started
            return
        client.sent_events += count
        self._queue(client, encode_frame(Frame(Kind.EVENTS, source.id, raw)))

    def _notice(self, client: Client, what: str, **fields: object) -> None:
        if client.close_reason is None and client.authenticated:
            self._queue(client, encode_frame(Frame(Kind.SERVICE, 0, service.notice(what, **fields))))

    # -- service -------------------------------------------------------------------

    def _service(self, client: Client, payload: bytes) -> None:
        message = service.decode(payload)
        if message["type"] != "request":
            raise ProtocolError(0, f"a client sends requests, not {message['type']}")
        try:
            request = service.parse_request(message)
            if not client.authenticated:
                self._authenticate(client, request)
                return
            result, snapshots = self._answer(client, request)
        except service.BadRequest as bad:
            self._queue(client, encode_frame(Frame(Kind.SERVICE, 0, service.error(bad.id, bad.reason))))
            return
        self._queue(client, encode_frame(Frame(Kind.SERVICE, 0, service.reply(request.id, result))))
        for source in snapshots:
            self._send_snapshot(client, source, header=request.op == "subscribe")

    def _authenticate(self, client: Client, request: service.Request) -> None:
        assert self.token is not None
        proof = request.args.get("proof") if request.op == "auth" else None
        expected = service.proof(self.token, client.nonce.hex())
        if not isinstance(proof, str) or not hmac.compare_digest(proof.encode("ascii", "replace"), expected.encode()):
            reason = "wrong token" if request.op == "auth" else "authenticate first (auth with the token's proof)"
            self._queue(client, encode_frame(Frame(Kind.SERVICE, 0, service.error(request.id, reason))))
            self._close(client, f"not authenticated: {reason}")
            return
        client.authenticated = True
        self._queue(client, encode_frame(Frame(Kind.SERVICE, 0, service.reply(request.id, {"ok": True}))))

    def _source_arg(self, request: service.Request, key: str = "source") -> Source:
        value = request.args.get(key)
        source = self.sources.get(value) if isinstance(value, int) and not isinstance(value, bool) else None
        if source is None:
            raise service.BadRequest(request.id, f"no source {value!r}; ask for 'sources'")
        return source

    def _answer(self, client: Client, request: service.Request) -> tuple[object, List[Source]]:
        """The reply's result, and the sources whose snapshots follow it."""
        op = request.op
        if op == "sources":
            return [s.info() for s in self.sources.values()], []
        if op == "subscribe":
            try:
                classes = service.class_filter(request.args.get("classes"))
            except ValueError as err:
                raise service.BadRequest(request.id, str(err)) from None
            wanted = request.args.get("sources", "all")
            if wanted == "all":
                client.all_sources = True
                client.all_classes = classes
                chosen = list(self.sources.values())
            elif isinstance(wanted, list):
                chosen = [self._source_arg(service.Request(request.id, op, {"source": v})) for v in wanted]
            else:
                raise service.BadRequest(request.id, "sources must be \"all\" or a list of source ids")
            for source in chosen:
                self._subscribe(client, source, classes, snapshot=False)
            return {"sources": [s.id for s in chosen]}, chosen
        if op == "auth":
            raise service.BadRequest(request.id, "already authenticated")
        if op == "unsubscribe":
            client.subs.clear()
            client.all_sources = False
            return {"sources": []}, []
        if op == "client":
            counts = {"id": client.id, "peer": client.peer, "events_sent": client.sent_events,
                      "events_dropped": client.dropped_total}
            return {**counts, **client.transport}, []
        source = self._source_arg(request)
        if op == "state":
            return {"source": source.id}, [source]
        if op == "secrets":
            return self._secrets(client, request, source), []
        if op == "calls":
            most = request.args.get("most", 2000)
            if not isinstance(most, int) or isinstance(most, bool) or not 1 <= most <= 100_000:
                raise service.BadRequest(request.id, f"most must be a whole number from 1 to 100000, not {most!r}")
            return {"source": source.id, "calls": source.state.calls.calls,
                    "tree": source.state.call_tree(most)}, []
        if op in ("pause", "resume", "resend"):
            line = op
        elif op == "trace":
            mode = request.args.get("mode")
            if mode not in ("on", "off"):
                raise service.BadRequest(request.id, f"mode must be \"on\" or \"off\", not {mode!r}")
            line = f"trace {mode}"
        else:
            hz = request.args.get("hz")
            if not isinstance(hz, (int, float)) or isinstance(hz, bool) or not 0 <= hz <= 10_000:
                raise service.BadRequest(request.id, f"hz must be a number from 0 to 10000, not {hz!r}")
            line = f"rate {hz:g}"
        if self.control is None:
            raise service.BadRequest(request.id, "this server forwards no commands")
        problem = self.control(source, line)
        if problem is not None:
            raise service.BadRequest(request.id, problem)
        if op in ("pause", "resume"):
            source.paused = op == "pause"
        return {"source": source.id, "sent": line}, []

    def _secrets(self, client: Client, request: service.Request, source: Source) -> Dict[str, object]:
        """What --show-secrets shows.  Redaction is the default everywhere;
        this is its one way around, and it stays on the machine: only a
        client there that proved the token gets it (without a token, any
        local user could ask), and it is read from the process on each
        request, never kept, streamed or recorded."""
        if self.token is None:
            raise service.BadRequest(request.id, "this server shows no secrets: start it with --token-file, so that "
                                                 "only a client with the token can ask")
        if not client.local:
            raise service.BadRequest(request.id, f"secrets are shown only to a client on the server's machine, "
                                                 f"not to {client.peer}")
        if self.secrets is None:
            raise service.BadRequest(request.id, "this server cannot read programs' secrets")
        try:
            found = self.secrets(source)
        except LookupError as err:
            raise service.BadRequest(request.id, str(err.args[0] if err.args else err)) from None
        log.warning("client %d (%s) was shown the unredacted command line and environment of source %d (%s)",
                    client.id, client.peer, source.id, source.name)
        return {"source": source.id, **found}

    def _subscribe(self, client: Client, source: Source, classes: Optional[frozenset[int]], snapshot: bool = True) -> None:
        client.subs[source.id] = Subscription(classes, started=classes is not None or not source.blocks)
        if snapshot:
            self._send_snapshot(client, source, header=True)

    def _send_snapshot(self, client: Client, source: Source, header: bool) -> None:
        if header and source.header is not None:
            self._queue(client, encode_frame(Frame(Kind.HEADER, source.id, source.header)))
        body = {"source": source.id, "name": source.name, "info": source.info(), "state": source.state.snapshot()}
        self._queue(client, encode_frame(Frame(Kind.STATE, source.id, json.dumps(body).encode("utf-8"))))

"""A seeded in-memory network for the UDP transport's tests.

Endpoints (a :class:`~lpm.udp.Server` or a client wrapped in
:class:`ClientEndpoint`) sit at addresses; each direction between two of them
is a :class:`LinkSpec`: loss, duplication, reordering, delay with jitter, a
bandwidth with a drop-tail queue, and an MTU above which datagrams vanish.
:meth:`Network.run` is an event-driven simulation: it jumps virtual time to
the next delivery or endpoint deadline, so a minute of protocol time costs
only the work done in it, and the same seed always gives the same run (as
KCP's ``LatencySimulator`` and trio's fake network do).
"""

from __future__ import annotations

import heapq
import itertools
import random
import zlib
from dataclasses import dataclass, replace
from typing import Callable, Dict, Hashable, List, Optional, Protocol, Tuple

from lpm.errors import ProtocolError
from lpm.udp import ClientConnection, Config, Event, Server, ServerConnection, State
from lpm.udp.packet import HEADER, TAG_SIZE, EventsFrame, MessageFrame, PacketType, decode_frames, decode_header

Address = Hashable


class Endpoint(Protocol):
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Address]]: ...

    def next_deadline(self) -> Optional[float]: ...

    def on_timer(self, now: float) -> None: ...


@dataclass
class LinkSpec:
    """One direction of a link."""

    loss: float = 0.0  #: probability a datagram is lost on the wire
    duplicate: float = 0.0  #: probability it arrives twice
    reorder: float = 0.0  #: probability it is held back ...
    reorder_delay: float = 0.004  #: ... by up to this long
    delay: float = 0.001  #: one-way propagation delay
    jitter: float = 0.0  #: extra delay, uniform in [0, jitter)
    bandwidth: Optional[float] = None  #: bytes per second (None: infinite)
    queue: int = 128 << 10  #: bytes waiting for the wire before tail drop
    mtu: int = 1200  #: larger datagrams are dropped


class _Link:
    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
        self.busy_until = 0.0


#: An observer of the network: (what, src, dst, datagram, now), where what is
#: "sent", "lost" (wire, queue or MTU) or "delivered".
Tap = Callable[[str, Address, Address, bytes, float], None]


class Network:
    def __init__(self, seed: int, spec: Optional[LinkSpec] = None) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.default = spec or LinkSpec()
        self.endpoints: Dict[Address, Endpoint] = {}
        self._links: Dict[Tuple[Address, Address], _Link] = {}
        self._heap: List[Tuple[float, int, Address, Address, bytes]] = []
        self._order = itertools.count()
        self.taps: List[Tap] = []
        self._actions: List[Tuple[float, int, Callable[[float], object]]] = []
        self.stats: Dict[str, int] = dict(sent=0, delivered=0, lost=0, queue_drops=0, mtu_drops=0, duplicated=0)

    def add(self, addr: Address, endpoint: Endpoint) -> None:
        self.endpoints[addr] = endpoint

    def remove(self, addr: Address) -> None:
        del self.endpoints[addr]

    def link(self, src: Address, dst: Address) -> LinkSpec:
        """The spec of the direction src -> dst, to read or change."""
        key = (src, dst)
        if key not in self._links:
            self._links[key] = _Link(replace(self.default))
        return self._links[key].spec

    def at(self, t: float, action: Callable[[float], object]) -> None:
        """Call ``action(now)`` when the simulation reaches time ``t``."""
        heapq.heappush(self._actions, (t, next(self._order), action))

    def send(self, src: Address, dst: Address, data: bytes) -> None:
        """Put a datagram on the wire from ``src`` (any address, even spoofed)."""
        self.link(src, dst)
        link = self._links[(src, dst)]
        spec = link.spec
        now = self.now
        self.stats["sent"] += 1
        self._tap("sent", src, dst, data)
        if len(data) > spec.mtu:
            self.stats["mtu_drops"] += 1
            self._tap("lost", src, dst, data)
            return
        leave = now
        if spec.bandwidth is not None:
            start = max(now, link.busy_until)
            if (start - now) * spec.bandwidth > spec.queue:
                self.stats["queue_drops"] += 1
                self._tap("lost", src, dst, data)
                return
            leave = start + len(data) / spec.bandwidth
            link.busy_until = leave
        rng = self.rng
        if rng.random() < spec.loss:
            self.stats["lost"] += 1
            self._tap("lost", src, dst, data)
            return
        copies = 2 if rng.random() < spec.duplicate else 1
        self.stats["duplicated"] += copies - 1
        for _ in range(copies):
            at = leave + spec.delay
            if spec.jitter:
                at += rng.random() * spec.jitter
            if spec.reorder and rng.random() < spec.reorder:
                at += rng.random() * spec.reorder_delay
            heapq.heappush(self._heap, (at, next(self._order), src, dst, data))

    def run(self, until: float, stop: Optional[Callable[[], bool]] = None) -> bool:
        """Advance time to ``until`` or until ``stop()``; whether it stopped."""
        same_time = 0
        while True:
            self._flush()
            if stop is not None and stop():
                return True
            deadlines = [(endpoint, endpoint.next_deadline()) for endpoint in self.endpoints.values()]
            t = self._heap[0][0] if self._heap else None
            if self._actions and (t is None or self._actions[0][0] < t):
                t = self._actions[0][0]
            for _, d in deadlines:
                if d is not None and (t is None or d < t):
                    t = d
            if t is None or t > until:
                self.now = max(self.now, until)
                return False
            if t <= self.now:
                t = self.now
                same_time += 1
                if same_time > 1000:
                    raise RuntimeError(f"simulation stuck at t={t}: a deadline that never passes")
            else:
                same_time = 0
            self.now = t
            actions = self._actions
            while actions and actions[0][0] <= t:
                heapq.heappop(actions)[2](t)
            heap = self._heap
            while heap and heap[0][0] <= t:
                _, _, src, dst, data = heapq.heappop(heap)
                endpoint = self.endpoints.get(dst)
                if endpoint is None:
                    continue
                self.stats["delivered"] += 1
                self._tap("delivered", src, dst, data)
                endpoint.receive_datagram(data, src, t)
            # Deadlines as they stood before the deliveries: one that a
            # delivery brought forward fires at the next turn, at this same t.
            for endpoint, d in deadlines:
                if d is not None and d <= t and endpoint in self.endpoints.values():
                    endpoint.on_timer(t)

    def _flush(self) -> None:
        for addr, endpoint in list(self.endpoints.items()):
            for data, dst in endpoint.datagrams_to_send(self.now):
                self.send(addr, dst, data)

    def _tap(self, what: str, src: Address, dst: Address, data: bytes) -> None:
        for tap in self.taps:
            tap(what, src, dst, data, self.now)


class ClientEndpoint:
    """A client connection on the network, talking to one server address.

    Its events are collected in ``events`` (with the time), and passed to
    ``on_event`` as they come, for tests that answer them.
    """

    def __init__(self, conn: ClientConnection, server: Address) -> None:
        self.conn = conn
        self.server = server
        self.events: List[Tuple[float, Event]] = []
        self.on_event: Optional[Callable[[Event, float], None]] = None

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if addr == self.server:
            self.conn.receive_datagram(data, now)
            self._drain(now)

    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Address]]:
        return [(d, self.server) for d in self.conn.datagrams_to_send(now)]

    def next_deadline(self) -> Optional[float]:
        return self.conn.next_deadline()

    def on_timer(self, now: float) -> None:
        self.conn.on_timer(now)
        self._drain(now)

    def _drain(self, now: float) -> None:
        while (event := self.conn.next_event()) is not None:
            self.events.append((now, event))
            if self.on_event is not None:
                self.on_event(event, now)


class ServerEndpoint:
    """A server on the network, collecting events like :class:`ClientEndpoint`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.events: List[Tuple[float, ServerConnection, Event]] = []
        self.on_event: Optional[Callable[[ServerConnection, Event, float], None]] = None

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.server.receive_datagram(data, addr, now)
        self._drain(now)

    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Address]]:
        return self.server.datagrams_to_send(now)

    def next_deadline(self) -> Optional[float]:
        return self.server.next_deadline()

    def on_timer(self, now: float) -> None:
        self.server.on_timer(now)
        self._drain(now)

    def _drain(self, now: float) -> None:
        while (item := self.server.next_event()) is not None:
            conn, event = item
            self.events.append((now, conn, event))
            if self.on_event is not None:
                self.on_event(conn, event, now)


def frames_of(data: bytes) -> List[object]:
    """The frames of a DATA datagram as an observer on the wire sees them
    (tags are not encryption), or [] for anything else."""
    try:
        if decode_header(data).type is not PacketType.DATA:
            return []
        return list(decode_frames(data, HEADER.size, len(data) - TAG_SIZE))
    except ProtocolError:
        return []


def events_frames(data: bytes) -> List[EventsFrame]:
    return [f for f in frames_of(data) if isinstance(f, EventsFrame)]


def message_frames(data: bytes) -> List[MessageFrame]:
    return [f for f in frames_of(data) if isinstance(f, MessageFrame)]


def seeded(seed: int) -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom."""
    rng = random.Random(seed)
    return lambda n: bytes(rng.getrandbits(8) for _ in range(n))


TOKEN = b"shared token of the tests"
SERVER = ("10.0.0.1", 4000)
CLIENT = ("10.0.0.2", 5000)


class Pair:
    """A server and one client (more with :meth:`add_client`) on a network."""

    def __init__(
        self,
        seed: int,
        spec: Optional[LinkSpec] = None,
        *,
        server_config: Optional[Config] = None,
        client_config: Optional[Config] = None,
    ) -> None:
        self.seed = seed
        self.net = Network(seed, spec)
        self.server = ServerEndpoint(Server(server_config or Config(token=TOKEN), random_bytes=seeded(seed)))
        self.net.add(SERVER, self.server)
        self.client_config = client_config or Config(token=TOKEN)
        self.client = self.add_client(CLIENT)

    def add_client(self, addr: Address, config: Optional[Config] = None, **kwargs: Optional[int]) -> ClientEndpoint:
        seed = zlib.crc32(repr((self.seed, addr)).encode())
        conn = ClientConnection(config or self.client_config, random_bytes=seeded(seed), **kwargs)
        endpoint = ClientEndpoint(conn, SERVER)
        self.net.add(addr, endpoint)
        conn.connect(self.net.now)
        return endpoint

    def connect(self, limit: float = 30.0) -> ServerConnection:
        """Run until the client is connected; the server's end of it."""
        assert self.net.run(self.net.now + limit, stop=lambda: self.client.conn.state is State.ESTABLISHED)
        return self.server_side(self.client.conn.session)

    def server_side(self, session: int) -> ServerConnection:
        return self.server.server.connections[session]

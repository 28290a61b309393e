"""Connections of the lpm UDP transport, both ends, and the server's demultiplexer.

Sans-IO, like ``aioquic``'s ``QuicConnection``: no sockets, clocks, threads or
randomness of their own.  Datagrams come in with the time (``now``, float
seconds of any monotonic clock); datagrams, one timer deadline and events go
out; random bytes come from an injected callable (``os.urandom`` by default).
A shell drives an endpoint in a loop, in this order::

    1. wait for a datagram or until next_deadline()
    2. receive_datagram(data, ..., now)   or   on_timer(now)
    3. handle next_event() until it returns None (and send_message() etc.)
    4. send every datagram of datagrams_to_send(now)

Any call can make datagrams or move the deadline, so steps 3 and 4 follow
every one of them.

Theory of operation.

- Handshake (``reference/runtime-anchors.md`` §6.5): HELLO (padded to 1200
  bytes) -> CHALLENGE (smaller, stateless: a cookie MAC binds the address,
  the time and what the server chose) -> PROOF (the client's HMAC of the
  transcript under the token) -> the server's proof in a WELCOME frame.  The
  server keeps no state for a client until its PROOF checks out, and before
  that never answers with more bytes than it received, so spoofed hellos
  cost it one MAC and can reflect nothing larger (RFC 9000 §8).  The client
  is connected at the first server packet whose tag verifies.
- A server id, random per server start, comes in the CHALLENGE: a client
  built with ``last_server_id`` of a previous connection reports
  :class:`ServerRestarted` when it differs.  A restarted server answers
  packets of sessions it does not know with a RESET that only a holder of
  the token can make, so clients notice at once instead of timing out.
- After the handshake every packet is authenticated (:mod:`.packet`), checked
  against the packets already seen, and its frames handed to the channels:
  two reliable ordered channels (:mod:`.fragments`) and a best-effort events
  channel (:class:`~.recovery.EventsSender`, :class:`~.recovery.EventsReceiver`).
- Acknowledgments follow RFC 9000 §13.2: after every second ack-eliciting
  packet, within ``max_ack_delay``, or at once when a packet arrives out of
  order or asks for it (ACK_NOW, which a sender puts in a packet whose ACK it
  will wait for: its window is full or it has nothing more to send); and the
  newest ranges ride along in every packet sent, so the next packet, if only
  a keepalive, makes good an ACK that was lost.  Loss
  detection, the PTO and the congestion window are :mod:`.recovery`'s; a
  token bucket caps the send rate.
- Closing: a CLOSE frame; the closing end answers stragglers with CLOSE for
  three PTOs, the other stays silent as long (RFC 9000 §10.2).  A peer that
  is not heard from for ``idle_timeout`` is dead; ``keepalive_interval`` of
  silence on our side sends a PING, so a live idle peer is always heard.

Peer input never raises: a bad datagram, frame or fragment is dropped and
counted in ``counters`` by reason (one word per reason, for the shell to log
once each).  Other connections of the same :class:`Server` never notice.
"""

from __future__ import annotations

import enum
import hmac
import math
import os
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Hashable, List, Optional, Tuple

from .fragments import (
    K_FRAGMENT_OVERHEAD,
    K_MIN_FRAGMENT,
    MemoryBudget,
    OutMessage,
    ReliableReceiver,
    ReliableSender,
    SendWindow,
)
from .packet import (
    ACK_NOW_FRAME,
    EVENTS_HEAD,
    FLAG_TOKEN,
    HEADER,
    MAX_ACK_RANGES,
    MAX_DATAGRAM,
    MESSAGE_HEAD,
    MIN_HELLO_SIZE,
    NONCE_SIZE,
    PING_FRAME,
    RESET_SIZE,
    TAG_SIZE,
    Ack,
    AckNow,
    BadPacket,
    Challenge,
    Channel,
    Close,
    EventsFrame,
    Frame,
    Header,
    Hello,
    Keys,
    Mark,
    MessageFrame,
    PacketType,
    Params,
    Ping,
    Proof,
    Welcome,
    cookie,
    data_header,
    decode_challenge,
    decode_frames,
    decode_header,
    decode_hello,
    decode_proof,
    derive_keys,
    encode_ack,
    encode_challenge,
    encode_close,
    encode_events,
    encode_hello,
    encode_mark,
    encode_message,
    encode_proof,
    encode_reset,
    encode_welcome,
    reset_tag,
    seal,
    verify,
)
from .recovery import (
    K_INITIAL_RTT,
    K_MAX_PTO,
    K_TIME_THRESHOLD,
    EventsReceiver,
    EventsSender,
    NewReno,
    RangeSet,
    Recovery,
    RttEstimator,
    SentPacket,
    TokenBucket,
)

#: Room kept in a full packet for a small ACK frame to ride along.
K_ACK_RESERVE = 32
#: Ranges in an ACK frame that only rides along (it fits K_ACK_RESERVE).
K_COURTESY_RANGES = 2
#: Probe packets sent when the PTO fires (RFC 9002 §6.2.4 allows two).
K_PROBES = 2
#: How many PTOs a closing or draining end lingers (RFC 9000 §10.2).
K_DRAIN_PTOS = 3
#: Unanswered PROOFs before a client starts over with a new HELLO: the
#: cookie it echoes may have expired (or the server restarted).
K_PROOF_TRIES = 4
#: The longest a client waits between handshake packets: backing off further
#: would spend a lossy path's few chances before the handshake timeout, and a
#: HELLO a second is no load on anyone.
K_MAX_HANDSHAKE_RETRY = 1.0

#: A peer's address as the shell's socket reports it (any hashable value).
Address = Hashable
RandomBytes = Callable[[int], bytes]


@dataclass
class Config:
    """Settings of one endpoint; both ends should agree on ``token``."""

    token: Optional[bytes] = None
    """Shared secret: proofs in the handshake and the key of every packet tag."""
    mtu: int = 1200
    """Largest datagram sent (UDP payload bytes); at least 1200, as QUIC."""
    initial_rtt: float = K_INITIAL_RTT
    """RTT assumed before the first sample (RFC 9002 §6.2.2)."""
    max_ack_delay: float = 0.025
    """Longest an acknowledgment is delayed (RFC 9000 §13.2.1)."""
    ack_eliciting_threshold: int = 2
    """Acknowledge at once after this many ack-eliciting packets."""
    idle_timeout: float = 15.0
    """A peer not heard from this long is dead."""
    keepalive_interval: float = 1.0
    """Send a PING after this long without sending anything."""
    handshake_timeout: float = 10.0
    """A client gives up connecting after this long."""
    max_message: int = 32 << 20
    """Largest reliable message accepted (and announced to the peer)."""
    receive_buffer: int = 64 << 20
    """Bytes held for reassembly and reordering, per connection."""
    reassembly_timeout: float = 30.0
    """A partial message with no new fragment for this long ends the connection."""
    max_send_rate: Optional[float] = float(32 << 20)
    """Token-bucket rate limit in bytes per second, per connection (None: none)."""
    send_burst: int = 64 << 10
    """Token-bucket depth in bytes."""
    events_queue_limit: int = 256 << 10
    """Events bytes queued for sending; the oldest are shed beyond it."""
    events_max_delay: float = 0.5
    """Events queued longer than this are shed rather than sent late."""
    events_reorder_delay: float = 0.05
    """Least time an events gap waits for late arrivals before it is lost."""
    events_shed_loss: float = 0.25
    """Loss rate above which the events throttle sheds."""
    cookie_lifetime: float = 10.0
    """Server: how long a challenge's cookie is good for."""
    max_connections: int = 1024
    """Server: connections at most; more hellos are ignored."""
    reset_rate: float = 20.0
    """Server: RESETs per second at most."""

    def __post_init__(self) -> None:
        if not 1200 <= self.mtu <= MAX_DATAGRAM:
            raise ValueError(f"mtu {self.mtu} outside 1200..{MAX_DATAGRAM}")
        if not 0 < self.max_ack_delay <= 16.0:
            raise ValueError(f"max_ack_delay {self.max_ack_delay} outside (0, 16] s")
        if self.max_message < 0 or self.max_message > 0xFFFFFFFF:
            raise ValueError(f"max_message {self.max_message} not a u32")
        need = self.max_message + (self.max_message // K_MIN_FRAGMENT + 1) * K_FRAGMENT_OVERHEAD
        if not need <= self.receive_buffer <= 0xFFFFFFFF:
            raise ValueError(f"receive_buffer {self.receive_buffer} cannot hold max_message (needs {need})")
        if self.initial_rtt <= 0 or self.idle_timeout <= 0 or self.keepalive_interval <= 0:
            raise ValueError("times must be positive")
        if self.max_send_rate is not None and self.max_send_rate <= 0:
            raise ValueError("max_send_rate must be positive or None")
        if self.send_burst < self.mtu:
            raise ValueError("send_burst must hold a datagram")

    @property
    def params(self) -> Params:
        return Params(round(self.max_ack_delay * 1e6), self.max_message, self.receive_buffer)


# Events.


class Event:
    """Base class of what a connection reports."""

    __slots__ = ()


@dataclass(frozen=True)
class Connected(Event):
    """The handshake is done; messages flow."""

    server_id: int
    session: int


@dataclass(frozen=True)
class ServerRestarted(Event):
    """Client: the server is not the one of ``last_server_id``."""

    previous_server_id: int
    server_id: int


@dataclass(frozen=True)
class Message(Event):
    """A message from the peer: once and in order on CONTROL and STATE, as it
    came on EVENTS (with the item count the sender gave)."""

    channel: Channel
    data: bytes
    items: int = 0


@dataclass(frozen=True)
class EventsLost(Event):
    """Items of the events channel that will never arrive (lost or shed)."""

    count: int


class CloseReason(enum.Enum):
    LOCAL = "closed here"
    PEER = "closed by the peer"
    IDLE_TIMEOUT = "peer silent too long"
    HANDSHAKE_TIMEOUT = "handshake timed out"
    RESET = "peer does not know the session"
    AUTH = "authentication refused"
    PROTOCOL = "protocol error"


@dataclass(frozen=True)
class Closed(Event):
    """The connection is over; nothing more will come."""

    reason: CloseReason
    detail: str = ""


class State(enum.Enum):
    HANDSHAKE = "handshake"
    ESTABLISHED = "established"
    CLOSING = "closing"  # we sent CLOSE; answering stragglers with it
    DRAINING = "draining"  # the peer closed; silent
    CLOSED = "closed"


def _address_bytes(addr: Address) -> bytes:
    return repr(addr).encode()


class Connection:
    """One end of a connection; see :class:`ClientConnection` and :class:`Server`.

    Attributes:
        state: the :class:`State`.
        session: the session id (0 until the client has a challenge).
        server_id: the server's id (random per server start).
        counters: dropped input, by reason.
        rtt, cc, recovery: the estimator, congestion window and loss recovery.
    """

    def __init__(self, config: Config, random_bytes: RandomBytes) -> None:
        self.config = config
        self._random = random_bytes
        self.state = State.HANDSHAKE
        self.session = 0
        self.server_id = 0
        self.counters: Dict[str, int] = {}
        self.peer_params: Optional[Params] = None
        self._send_key = b""
        self._recv_key = b""
        self._now = 0.0
        # receiving and acknowledging
        self._received = RangeSet()
        self._largest_received_time = 0.0
        self._ack_dirty = False  # ack-eliciting packets arrived since our last ACK
        self._unacked_eliciting = 0
        self._ack_at: Optional[float] = None
        self._ack_asap = False  # an ACK_NOW came
        self._last_received = 0.0
        # sending
        self._next_pn = 0
        self._last_sent = 0.0
        self._probes = 0
        self._welcome: Optional[bytes] = None  # server proof to send
        self._keys: Optional[Keys] = None
        self.rtt = RttEstimator(config.initial_rtt)
        self.cc = NewReno(config.mtu)
        # Backed off no further than a third of the idle timeout, so a path
        # that lost a run of probes gets more before the peer is given up
        # (RFC 9000 §10.1 asks for an idle timeout of three PTOs at least).
        self.recovery = Recovery(self.rtt, self.cc, config.max_ack_delay, min(K_MAX_PTO, config.idle_timeout / 3))
        self._bucket = TokenBucket(config.max_send_rate, config.send_burst)
        self._room = config.mtu - HEADER.size - TAG_SIZE
        self.frag_size = self._room - MESSAGE_HEAD.size - K_ACK_RESERVE
        #: The largest ``data`` :meth:`send_events` takes.
        self.max_events_payload = self._room - EVENTS_HEAD.size - K_ACK_RESERVE
        self._window = SendWindow(config.receive_buffer)
        self._senders = (
            ReliableSender(Channel.CONTROL, self.frag_size, self._window),
            ReliableSender(Channel.STATE, self.frag_size, self._window),
        )
        self._retransmit: Deque[Tuple[OutMessage, int]] = deque()
        budget = MemoryBudget(config.receive_buffer)
        self._receivers = (
            ReliableReceiver(Channel.CONTROL, budget, config.max_message, config.reassembly_timeout),
            ReliableReceiver(Channel.STATE, budget, config.max_message, config.reassembly_timeout),
        )
        self.events_out = EventsSender(config.events_queue_limit, config.events_max_delay)
        self.events_in = EventsReceiver(self.counters)
        self._throttle_at = 0.0
        # closing
        self._close_frame = b""
        self._close_pending = False
        self._drain_until = 0.0
        # events out
        self._events: Deque[Event] = deque()
        self._on_event: Optional[Callable[[Connection], None]] = None
        self._stats: Dict[str, int] = {
            "packets_sent": 0,
            "packets_received": 0,
            "bytes_sent": 0,
            "bytes_received": 0,
            "fragments_retransmitted": 0,
            "probes": 0,
        }

    # -- the API a shell and an application use

    def send_message(self, channel: Channel, data: bytes) -> int:
        """Queue a reliable message on CONTROL or STATE; its message id.

        It arrives once, whole, and after every earlier message of its channel.
        Messages queued before the handshake completes go after it.

        Raises:
            ValueError: the EVENTS channel, or larger than the peer accepts.
            RuntimeError: the connection is closing or closed.
        """
        if channel == Channel.EVENTS:
            raise ValueError("the events channel takes send_events()")
        self._check_open()
        limit = self.peer_params.max_message if self.peer_params else self.config.max_message
        if len(data) > limit:
            raise ValueError(f"message of {len(data)} bytes exceeds the peer's limit of {limit}")
        return self._senders[channel].push(bytes(data))

    def send_events(self, data: bytes, items: int, now: float) -> bool:
        """Offer an events message of ``items`` items, best effort.

        False if it was shed at once (the path is in trouble); it may also be
        shed later if it waits too long.  Shed items reach the peer as
        :class:`EventsLost`, never silently.

        Raises:
            ValueError: longer than :attr:`max_events_payload`, or items < 0.
            RuntimeError: the connection is closing or closed.
        """
        if len(data) > self.max_events_payload:
            raise ValueError(f"events message of {len(data)} bytes over {self.max_events_payload}")
        if not 0 <= items <= 0xFFFFFFFF:
            raise ValueError(f"items {items} not a u32")
        self._check_open()
        self._now = max(self._now, now)
        return self.events_out.offer(bytes(data), items, now)

    def close(self, now: float, reason: str = "") -> None:
        """Close: tell the peer, and report :class:`Closed` (LOCAL)."""
        self._now = max(self._now, now)
        if self.state is State.ESTABLISHED:
            self._close_with(now, 0, CloseReason.LOCAL, reason)
        elif self.state is State.HANDSHAKE:
            self._terminate(CloseReason.LOCAL, reason)

    def next_event(self) -> Optional[Event]:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now: float) -> List[bytes]:
        """Every datagram due now, in order."""
        self._now = max(self._now, now)
        state = self.state
        if state is State.ESTABLISHED:
            out: List[bytes] = []
            try:
                while True:
                    datagram = self._build_packet(now)
                    if datagram is None:
                        return out
                    out.append(datagram)
            except Exception as exc:  # a bug: end this connection, not the caller
                self._internal_error(exc)
                return out
        if state is State.CLOSING and self._close_pending:
            self._close_pending = False
            return [self._seal([self._close_frame])]
        return []

    def next_deadline(self) -> Optional[float]:
        """When :meth:`on_timer` (and then :meth:`datagrams_to_send`) is due."""
        state = self.state
        if state is State.ESTABLISHED:
            cfg = self.config
            t = self._last_received + cfg.idle_timeout
            for d in (
                self._ack_at,
                self.recovery.deadline(),
                self._send_deadline(),
                None if self.events_in.gap_since is None else self.events_in.deadline(self._reorder_delay()),
                self._receivers[0].deadline(),
                self._receivers[1].deadline(),
            ):
                if d is not None and d < t:
                    t = d
            return max(t, self._now)
        if state is State.CLOSING or state is State.DRAINING:
            return self._now if self._close_pending else self._drain_until
        return None

    def on_timer(self, now: float) -> None:
        self._now = max(self._now, now)
        state = self.state
        if state is State.ESTABLISHED:
            try:
                self._on_timer(now)
            except Exception as exc:  # a bug: end this connection, not the caller
                self._internal_error(exc)
        elif state is State.CLOSING or state is State.DRAINING:
            if now >= self._drain_until:
                self.state = State.CLOSED

    @property
    def is_established(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def is_closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def queued_bytes(self) -> int:
        """Reliable bytes not yet started (for the application's back-pressure)."""
        return self._senders[0].queued_bytes + self._senders[1].queued_bytes

    @property
    def unacked_messages(self) -> int:
        """Reliable messages queued or not yet acknowledged whole."""
        return sum(len(s.waiting) + len(s.open) for s in self._senders)

    def stats(self) -> Dict[str, float]:
        """Counts and gauges for a status view (not drops: see ``counters``)."""
        out: Dict[str, float] = dict(self._stats)
        out.update(
            packets_lost=self.recovery.packets_lost,
            bytes_in_flight=self.recovery.bytes_in_flight,
            cwnd=self.cc.cwnd,
            srtt=self.rtt.smoothed,
            rttvar=self.rtt.var,
            min_rtt=self.rtt.min if self.rtt.samples else 0.0,
            loss_rate=self.recovery.loss.rate,
            events_items_offered=self.events_out.items_offered,
            events_items_sent=self.events_out.items_sent,
            events_items_shed=self.events_out.items_shed,
            events_items_received=self.events_in.items_received,
            events_items_lost=self.events_in.items_lost,
            events_throttle=self.events_out.throttle.value,
            messages_duplicate=self._receivers[0].duplicates + self._receivers[1].duplicates,
        )
        return out

    # -- private: state changes

    def _check_open(self) -> None:
        if self.state not in (State.HANDSHAKE, State.ESTABLISHED):
            raise RuntimeError(f"connection is {self.state.value}")

    def _emit_events(self, lost: int) -> None:
        """What the events channel settled: the items given up for lost, then
        the messages now in order (the loss comes before them in seq)."""
        if lost:
            self._emit(EventsLost(lost))
        for data, items in self.events_in.take():
            self._emit(Message(Channel.EVENTS, data, items))

    def _emit(self, event: Event) -> None:
        self._events.append(event)
        if self._on_event is not None and len(self._events) == 1:
            self._on_event(self)  # the server's queue of connections with events

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _set_peer(self, params: Params) -> None:
        self.peer_params = params
        self._window.limit = params.receive_buffer
        self.recovery.peer_max_ack_delay = params.max_ack_delay_us / 1e6

    def _begin(self, keys: Keys, challenge: Challenge, send_key: bytes, recv_key: bytes) -> None:
        self.session = challenge.session
        self.server_id = challenge.server_id
        self._send_key = send_key
        self._recv_key = recv_key
        self._keys = keys

    def _establish(self, now: float) -> None:
        self.state = State.ESTABLISHED
        self._last_received = now
        self._last_sent = now
        self._emit(Connected(self.server_id, self.session))

    def _terminate(self, reason: CloseReason, detail: str) -> None:
        """Over at once, with nothing more to send."""
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self._emit(Closed(reason, detail))

    def _close_with(self, now: float, code: int, reason: CloseReason, detail: str) -> None:
        self.state = State.CLOSING
        self._close_frame = encode_close(code, detail)
        self._close_pending = True
        self._drain_until = now + K_DRAIN_PTOS * self.recovery.pto_duration()
        self._emit(Closed(reason, detail))

    def _internal_error(self, exc: Exception) -> None:
        self._count("internal_error")
        if self.state is State.ESTABLISHED:
            self._close_with(self._now, 1, CloseReason.PROTOCOL, f"internal error: {exc!r}")
        else:
            self._terminate(CloseReason.PROTOCOL, f"internal error: {exc!r}")

    # -- private: receiving

    def _on_data(self, data: bytes, header: Header, now: float) -> bool:
        """A DATA packet for this connection; whether it was genuine and new."""
        state = self.state
        if state is State.CLOSED or state is State.DRAINING:
            self._count("after_close")
            return False
        if not self._recv_key:
            self._count("unexpected_packet")
            return False
        if header.session != self.session:
            self._count("wrong_session")
            return False
        if not verify(self._recv_key, data):
            self._count("bad_tag")
            return False
        pn = header.number
        if pn in self._received:
            self._count("duplicate_packet")
            return False
        frames = decode_frames(data, HEADER.size, len(data) - TAG_SIZE)
        in_order = pn == self._received.largest + 1
        self._received.add(pn)
        if pn == self._received.largest:
            self._largest_received_time = now
        self._last_received = now
        self._stats["packets_received"] += 1
        self._stats["bytes_received"] += len(data)
        if state is State.CLOSING:
            if any(type(f) is Close for f in frames):
                self.state = State.DRAINING
            else:
                self._close_pending = True
            return True
        if state is State.HANDSHAKE:
            self._establish(now)
        eliciting = False
        for frame in frames:
            try:
                eliciting = self._on_frame(frame, now) or eliciting
            except BadPacket as exc:
                self._count(exc.counter)
            if self.state is not State.ESTABLISHED:
                return True
        if eliciting:
            # Only ack-eliciting packets are worth an ACK of their own or a
            # ride on ours; the others appear in ranges when an ACK goes anyway.
            self._ack_dirty = True
            self._unacked_eliciting += 1
            if (
                not in_order  # RFC 9000 §13.2.1: at once on a gap
                or self._ack_asap
                or self._unacked_eliciting >= self.config.ack_eliciting_threshold
            ):
                self._ack_at = now
                self._ack_asap = False
            elif self._ack_at is None:
                self._ack_at = now + self.config.max_ack_delay
        return True

    def _on_frame(self, frame: Frame, now: float) -> bool:
        """Act on one frame; whether it was ack-eliciting."""
        if isinstance(frame, MessageFrame):
            for data in self._receivers[frame.channel].on_fragment(frame, now):
                self._emit(Message(frame.channel, data))
            return True
        if isinstance(frame, Ack):
            self._on_ack(frame, now)
            return False
        if isinstance(frame, EventsFrame):
            _, lost = self.events_in.on_events(frame.seq, frame.cum, frame.items, now, frame.data)
            self._emit_events(lost)
            return True
        if isinstance(frame, Mark):
            self._emit_events(self.events_in.on_mark(frame.next_seq, frame.cum, now))
            return True
        if isinstance(frame, AckNow):
            self._ack_asap = True
            return True
        if isinstance(frame, Ping):
            return True
        if isinstance(frame, Close):
            self.state = State.DRAINING
            self._drain_until = now + K_DRAIN_PTOS * self.recovery.pto_duration()
            self._emit(Closed(CloseReason.PEER, frame.reason))
            return False
        self._on_welcome(frame)
        return False

    def _on_welcome(self, frame: Welcome) -> None:
        self._count("unexpected_welcome")

    def _on_ack(self, ack: Ack, now: float) -> None:
        acked, lost = self.recovery.on_ack(ack, now)
        senders = self._senders
        events_out = self.events_out
        for pkt in acked:
            for msg, k in pkt.fragments:
                senders[msg.channel].on_acked(msg, k)
            if pkt.events_top is not None:
                events_out.on_acked(pkt.events_top)
            if pkt.mark is not None:
                events_out.on_acked(pkt.mark)
        if lost:
            self._on_lost(lost)
        if acked and now >= self._throttle_at:
            trouble = self.recovery.loss.rate > self.config.events_shed_loss or self.rtt.queueing()
            events_out.throttle.update(trouble)
            self._throttle_at = now + self.rtt.smoothed

    def _on_lost(self, lost: List[SentPacket]) -> None:
        queue = self._retransmit
        for pkt in lost:
            for msg, k in pkt.fragments:
                if not msg.acked[k] and not msg.queued[k]:
                    msg.queued[k] = 1
                    queue.append((msg, k))
            if pkt.mark is not None:
                self.events_out.on_mark_lost(pkt.mark)

    # -- private: timers

    def _reorder_delay(self) -> float:
        rtt = self.rtt
        return max(self.config.events_reorder_delay, K_TIME_THRESHOLD * max(rtt.smoothed, rtt.latest))

    def _on_timer(self, now: float) -> None:
        if now >= self._last_received + self.config.idle_timeout:
            self._terminate(CloseReason.IDLE_TIMEOUT, f"nothing heard for {self.config.idle_timeout:g} s")
            return
        deadline = self.recovery.deadline()
        if deadline is not None and now >= deadline:
            lost, probe = self.recovery.on_timeout(now)
            if lost:
                self._on_lost(lost)
            if probe:
                self._probes = K_PROBES
                self._stats["probes"] += 1
                self._requeue_oldest()
        self._emit_events(self.events_in.on_timer(now, self._reorder_delay()))
        for receiver in self._receivers:
            deadline = receiver.deadline()
            if deadline is not None and now >= deadline:
                self._count("reassembly_timeout")
                self._close_with(now, 1, CloseReason.PROTOCOL, "a message's reassembly timed out")
                return

    def _requeue_oldest(self) -> None:
        """A probe carries the oldest unacknowledged data (RFC 9002 §6.2.4)."""
        for pkt in self.recovery.sent.values():
            fresh = [(m, k) for m, k in pkt.fragments if not m.acked[k] and not m.queued[k]]
            if fresh:
                for msg, k in reversed(fresh):
                    msg.queued[k] = 1
                    self._retransmit.appendleft((msg, k))
                return

    # -- private: sending

    def _work_at(self) -> float:
        """When ack-eliciting data is next due (-inf: now; inf: none)."""
        if self._probes or self._welcome is not None:
            return -math.inf
        queue = self._retransmit
        while queue:
            msg, k = queue[0]
            if not msg.acked[k]:
                return -math.inf
            queue.popleft()
            msg.queued[k] = 0
        if self.events_out.queue or self._senders[0].peek() is not None or self._senders[1].peek() is not None:
            return -math.inf
        t = math.inf
        mark_at = self.events_out.mark_due_at(2 * self.config.max_ack_delay)
        if mark_at is not None:
            t = mark_at
        if self.recovery.bytes_in_flight == 0:
            t = min(t, self._last_sent + self.config.keepalive_interval)
        return t

    def _send_deadline(self) -> Optional[float]:
        t = self._work_at()
        if t == math.inf:
            return None
        if self._probes:
            return t
        if self.recovery.bytes_in_flight >= self.cc.cwnd:
            return None  # an ACK or the loss timer comes first
        return max(t, self._bucket.next_ready(self.config.mtu))

    def _seal(self, frames: List[bytes]) -> bytes:
        pn = self._next_pn
        self._next_pn += 1
        self.recovery.largest_sent = pn
        datagram = seal(self._send_key, data_header(self.session, pn) + b"".join(frames))
        self._stats["packets_sent"] += 1
        self._stats["bytes_sent"] += len(datagram)
        return datagram

    def _build_packet(self, now: float) -> Optional[bytes]:
        rec = self.recovery
        probing = self._probes > 0
        work = (
            probing or (rec.bytes_in_flight < self.cc.cwnd and self._bucket.ready_at(self.config.mtu, now) <= now)
        ) and self._work_at() <= now
        ack_due = self._ack_at is not None and now >= self._ack_at
        if not work and not ack_due:
            return None
        parts: List[bytes] = []
        space = self._room
        if len(self._received) and (self._ack_dirty or work):
            # An ACK is due, or rides along: every packet we send repeats the
            # newest ranges (as many as fit the room kept for it), so a lost
            # ACK is made good by the next packet, a keepalive included.
            # Otherwise a sender whose ACKs were all lost waits out its probe
            # timeouts, which double, while we have nothing new to ack.
            limit = MAX_ACK_RANGES if self._ack_dirty else K_COURTESY_RANGES
            frame = encode_ack(
                self._received.descending(limit), int((now - self._largest_received_time) * 1e6)
            )
            parts.append(frame)
            space -= len(frame)
            self._ack_dirty = False
            self._unacked_eliciting = 0
            self._ack_at = None
        pkt = SentPacket(self._next_pn, now, 0)
        eliciting = ack_now = False
        if work:
            space -= len(ACK_NOW_FRAME)  # kept for it, whatever comes
            if self._welcome is not None:
                parts.append(encode_welcome(self._welcome))
                space -= len(parts[-1])
                self._welcome = None
            events_out = self.events_out
            mark_at = events_out.mark_due_at(2 * self.config.max_ack_delay)
            if mark_at is not None and mark_at <= now:
                pkt.mark = events_out.mark_sent()
                parts.append(encode_mark(*pkt.mark))
                space -= len(parts[-1])
                eliciting = True
            space = self._add_retransmissions(pkt, parts, space)
            space = self._add_fragments(self._senders[0], pkt, parts, space)
            while True:
                size = events_out.head_size(now)
                if size is None or EVENTS_HEAD.size + size > space:
                    break
                seq, cum, items, data = events_out.pop(now)
                parts.append(encode_events(seq, cum, items, data))
                space -= EVENTS_HEAD.size + size
                pkt.events_top = (seq + 1, cum)
                eliciting = True
            space = self._add_fragments(self._senders[1], pkt, parts, space)
            if pkt.fragments:
                eliciting = True
            keepalive = rec.bytes_in_flight == 0 and now >= self._last_sent + self.config.keepalive_interval
            if not eliciting and (probing or keepalive):
                parts.append(PING_FRAME)
                eliciting = True
            if eliciting:
                self._last_sent = now  # so a keepalive does not count as more to send
            if eliciting and (
                rec.bytes_in_flight + self.config.mtu >= self.cc.cwnd or probing or self._work_at() > now
            ):
                # We will wait for this packet's ACK: ask for it undelayed.
                parts.append(ACK_NOW_FRAME)
                ack_now = True
        if not parts:
            return None
        datagram = self._seal(parts)
        if eliciting:
            pkt.size = len(datagram)
            pkt.app_limited = rec.bytes_in_flight + pkt.size < self.cc.cwnd / 2
            rec.on_sent(pkt, ack_now)
            self._bucket.take(pkt.size, now)
            if probing:
                self._probes -= 1
        self._last_sent = now
        return datagram

    def _add_retransmissions(self, pkt: SentPacket, parts: List[bytes], space: int) -> int:
        queue = self._retransmit
        while queue:
            msg, k = queue[0]
            if msg.acked[k]:
                queue.popleft()
                msg.queued[k] = 0
                continue
            n = msg.fragment_len(k)
            if MESSAGE_HEAD.size + n > space:
                break
            queue.popleft()
            msg.queued[k] = 0
            offset, chunk = msg.fragment(k)
            parts.append(encode_message(msg.channel, msg.msg_id, msg.total, offset, chunk))
            pkt.fragments.append((msg, k))
            space -= MESSAGE_HEAD.size + n
            self._stats["fragments_retransmitted"] += 1
        return space

    def _add_fragments(self, sender: ReliableSender, pkt: SentPacket, parts: List[bytes], space: int) -> int:
        while True:
            msg = sender.peek()
            if msg is None:
                return space
            k = msg.next_frag
            n = msg.fragment_len(k)
            if MESSAGE_HEAD.size + n > space:
                return space
            msg.next_frag += 1
            offset, chunk = msg.fragment(k)
            parts.append(encode_message(msg.channel, msg.msg_id, msg.total, offset, chunk))
            pkt.fragments.append((msg, k))
            space -= MESSAGE_HEAD.size + n


class ClientConnection(Connection):
    """The client end.  Call :meth:`connect`, then drive it as the module says.

    Args:
        config: settings (the token must match the server's).
        random_bytes: where nonces come from.
        last_server_id: the server id of a previous connection to the same
            server, to report a :class:`ServerRestarted` if it changed.
    """

    def __init__(
        self,
        config: Optional[Config] = None,
        *,
        random_bytes: RandomBytes = os.urandom,
        last_server_id: Optional[int] = None,
    ) -> None:
        super().__init__(config or Config(), random_bytes)
        self.last_server_id = last_server_id
        self._hello: Optional[Hello] = None
        self._hello_bytes = b""
        self._proof_bytes = b""
        self._hs_send = False
        self._hs_sent = 0
        self._hs_first_sent = 0.0
        self._hs_interval = 0.0
        self._hs_resend_at = math.inf
        self._hs_deadline = math.inf

    def connect(self, now: float) -> None:
        """Start the handshake; the HELLO is in the next datagrams_to_send()."""
        if self._hello is not None:
            raise RuntimeError("connect() was called already")
        self._now = max(self._now, now)
        self._hs_deadline = now + self.config.handshake_timeout
        self._say_hello(now)

    def _say_hello(self, now: float) -> None:
        # A fresh nonce each time: the server refuses a nonce it accepted once.
        flags = FLAG_TOKEN if self.config.token else 0
        self._hello = Hello(self._random(NONCE_SIZE), self.config.params, flags)
        self._hello_bytes = encode_hello(self._hello)
        self._proof_bytes = b""
        self._recv_key = self._send_key = b""
        self.session = 0
        self._start_phase(now)

    def _start_phase(self, now: float) -> None:
        self._hs_send = True
        self._hs_sent = 0
        self._hs_interval = min(self.rtt.pto(0.0), K_MAX_HANDSHAKE_RETRY)
        self._hs_resend_at = now + self._hs_interval

    def receive_datagram(self, data: bytes, now: float) -> None:
        """A datagram from the server.  Never raises: bad input is counted."""
        self._now = max(self._now, now)
        try:
            header = decode_header(data)
            if header.type is PacketType.DATA:
                self._on_data(data, header, now)
            elif header.type is PacketType.CHALLENGE:
                self._on_challenge(data, now)
            elif header.type is PacketType.RESET:
                self._on_reset(data, header)
            else:
                self._count("unexpected_packet")
        except BadPacket as exc:
            self._count(exc.counter)
        except Exception as exc:  # a bug: end this connection, not the caller
            self._internal_error(exc)

    def datagrams_to_send(self, now: float) -> List[bytes]:
        if self.state is State.HANDSHAKE:
            self._now = max(self._now, now)
            if not self._hs_send:
                return []
            self._hs_send = False
            self._hs_sent += 1
            if self._hs_sent == 1:
                self._hs_first_sent = now
            return [self._proof_bytes or self._hello_bytes]
        return super().datagrams_to_send(now)

    def next_deadline(self) -> Optional[float]:
        if self.state is State.HANDSHAKE:
            if self._hello is None:
                return None
            return max(self._now, min(self._hs_resend_at, self._hs_deadline))
        return super().next_deadline()

    def on_timer(self, now: float) -> None:
        if self.state is not State.HANDSHAKE:
            super().on_timer(now)
            return
        self._now = max(self._now, now)
        if now >= self._hs_deadline:
            if self._proof_bytes:
                detail = "the server did not accept our proof (a different token?)"
            else:
                detail = "no answer from the server"
            self._terminate(CloseReason.HANDSHAKE_TIMEOUT, detail)
        elif now >= self._hs_resend_at:
            if self._proof_bytes and self._hs_sent >= K_PROOF_TRIES:
                self._say_hello(now)
                return
            self._hs_send = True
            self._hs_interval = min(2 * self._hs_interval, K_MAX_HANDSHAKE_RETRY)
            self._hs_resend_at = now + self._hs_interval

    def _on_challenge(self, data: bytes, now: float) -> None:
        hello = self._hello
        if self.state is not State.HANDSHAKE or hello is None or self._proof_bytes:
            self._count("unexpected_packet")
            return
        challenge = decode_challenge(data)
        if not hmac.compare_digest(challenge.client_nonce, hello.nonce) or challenge.session == 0:
            self._count("bad_challenge")
            return
        required = bool(challenge.flags & FLAG_TOKEN)
        if required and not self.config.token:
            self._terminate(CloseReason.AUTH, "the server requires a token")
            return
        if self.config.token and not required:
            self._terminate(CloseReason.AUTH, "the server has no token, so it cannot prove it knows ours")
            return
        keys = derive_keys(self.config.token, hello, challenge)
        self._begin(keys, challenge, keys.client_to_server, keys.server_to_client)
        self._set_peer(challenge.params)
        if self._hs_sent == 1:
            self.rtt.update(now - self._hs_first_sent)
        self._proof_bytes = encode_proof(Proof(hello, challenge, keys.client_proof))
        self._start_phase(now)

    def _establish(self, now: float) -> None:
        if self._hs_sent == 1:
            self.rtt.update(now - self._hs_first_sent)
        super()._establish(now)
        last = self.last_server_id
        if last is not None and last != self.server_id:
            self._emit(ServerRestarted(last, self.server_id))

    def _on_welcome(self, frame: Welcome) -> None:
        if self._keys is None or not hmac.compare_digest(frame.proof, self._keys.server_proof):
            self._count("bad_proof")

    def _on_reset(self, data: bytes, header: Header) -> None:
        if (
            self.session == 0
            or header.session != self.session
            or len(data) != RESET_SIZE
            or not hmac.compare_digest(data[HEADER.size :], reset_tag(self.config.token, self.session))
        ):
            self._count("bad_reset")
            return
        if self.state is not State.CLOSED:
            self._terminate(CloseReason.RESET, "the server does not know this session (restarted, or our address changed)")


class ServerConnection(Connection):
    """The server's end of one client's connection; made by :class:`Server`.

    Attributes:
        addr: the client's address, which datagrams_to_send() output goes to;
            it never changes (see Server.receive_datagram).
    """

    def __init__(
        self,
        config: Config,
        random_bytes: RandomBytes,
        addr: Address,
        proof: Proof,
        keys: Keys,
        now: float,
    ) -> None:
        super().__init__(config, random_bytes)
        self.addr = addr
        self.client_nonce = proof.hello.nonce
        self._now = now
        self._begin(keys, proof.challenge, keys.server_to_client, keys.client_to_server)
        self._set_peer(proof.hello.params)
        self._welcome = keys.server_proof

    def _on_datagram(self, data: bytes, header: Header, now: float) -> None:
        self._now = max(self._now, now)
        try:
            self._on_data(data, header, now)
        except BadPacket as exc:
            self._count(exc.counter)
        except Exception as exc:  # a bug: end this connection, not the server
            self._internal_error(exc)

    def _genuine(self, data: bytes) -> bool:
        return bool(self._recv_key) and verify(self._recv_key, data)

    def _resend_welcome(self) -> None:
        if self.state is State.ESTABLISHED and self._keys is not None:
            self._welcome = self._keys.server_proof


class Server:
    """The server end: a demultiplexer of connections behind one socket.

    It answers hellos statelessly and creates a :class:`ServerConnection` only
    for a client whose proof checks out; each connection's input, timers and
    failures are its own.

    Attributes:
        server_id: random per start, so clients notice a restart.
        connections: live connections by session id.
        counters: datagrams dropped before reaching a connection, by reason.
    """

    def __init__(self, config: Optional[Config] = None, *, random_bytes: RandomBytes = os.urandom) -> None:
        self.config = config or Config()
        self._random = random_bytes
        self.server_id = int.from_bytes(random_bytes(8), "big")
        self._secret = random_bytes(32)
        self.connections: Dict[int, ServerConnection] = {}
        self.counters: Dict[str, int] = {}
        self._outbox: List[Tuple[bytes, Address]] = []
        self._used_nonces: Dict[bytes, float] = {}  # client nonce -> when its cookie expires
        self._nonce_expiry: Deque[Tuple[float, bytes]] = deque()
        rate = self.config.reset_rate
        self._resets = TokenBucket(rate * RESET_SIZE, max(1, int(rate)) * RESET_SIZE)
        self._ready: Deque[ServerConnection] = deque()  # connections with events
        self._closed_counters: Dict[str, int] = {}
        self._now = 0.0

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """A datagram from ``addr``.  Never raises: bad input is counted."""
        self._now = max(self._now, now)
        try:
            header = decode_header(data)
            if header.type is PacketType.DATA:
                conn = self.connections.get(header.session)
                if conn is None:
                    self._count("unknown_session")
                    self._reset(header.session, len(data), addr, now)
                elif addr != conn.addr:
                    # The connection does not move: sending its stream to an
                    # address nobody validated would let anyone who saw one
                    # packet redirect it (RFC 9000 §9 validates paths first).
                    # A genuine client whose NAT rebound is told to reconnect.
                    self._count("wrong_address")
                    if conn._genuine(data):
                        self._reset(header.session, len(data), addr, now)
                else:
                    conn._on_datagram(data, header, now)
            elif header.type is PacketType.HELLO:
                self._on_hello(data, addr, now)
            elif header.type is PacketType.PROOF:
                self._on_proof(data, addr, now)
            else:
                self._count("unexpected_packet")
        except BadPacket as exc:
            self._count(exc.counter)
        except Exception:  # a bug; the shell and the other clients go on
            self._count("internal_error")

    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Address]]:
        """Every datagram due now, with where it goes."""
        self._now = max(self._now, now)
        out, self._outbox = self._outbox, []
        closed = []
        for session, conn in self.connections.items():
            for datagram in conn.datagrams_to_send(now):
                out.append((datagram, conn.addr))
            if conn.state is State.CLOSED:
                closed.append(session)
        for session in closed:
            self._forget(session)
        return out

    def next_deadline(self) -> Optional[float]:
        best: Optional[float] = None
        for conn in self.connections.values():
            d = conn.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        if self._outbox:
            return self._now
        return best

    def on_timer(self, now: float) -> None:
        self._now = max(self._now, now)
        for conn in list(self.connections.values()):
            d = conn.next_deadline()
            if d is not None and d <= now:
                conn.on_timer(now)
            if conn.state is State.CLOSED:
                self._forget(conn.session)
        self._expire_nonces(now)

    def next_event(self) -> Optional[Tuple[ServerConnection, Event]]:
        """The next event of any connection, with its connection."""
        ready = self._ready
        while ready:
            conn = ready[0]
            event = conn.next_event()
            if event is not None:
                return conn, event
            ready.popleft()
        return None

    def close(self, now: float, reason: str = "server shutting down") -> None:
        for conn in self.connections.values():
            conn.close(now, reason)

    def all_counters(self) -> Dict[str, int]:
        """Drops by reason, of the server and of every connection it had."""
        total = dict(self.counters)
        for counters in [self._closed_counters, *(c.counters for c in self.connections.values())]:
            for key, n in counters.items():
                total[key] = total.get(key, 0) + n
        return total

    # -- private

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _forget(self, session: int) -> None:
        conn = self.connections.pop(session)
        for key, n in conn.counters.items():
            self._closed_counters[key] = self._closed_counters.get(key, 0) + n

    def _notify(self, conn: Connection) -> None:
        assert isinstance(conn, ServerConnection)
        self._ready.append(conn)

    def _on_hello(self, data: bytes, addr: Address, now: float) -> None:
        if len(data) < MIN_HELLO_SIZE:
            self._count("short_hello")  # too small to answer without amplifying
            return
        hello = decode_hello(data)
        if len(self.connections) >= self.config.max_connections:
            self._count("too_many_connections")
            return
        session = 0
        while session == 0 or session in self.connections:
            session = int.from_bytes(self._random(8), "big")
        challenge = Challenge(
            hello.nonce,
            self._random(NONCE_SIZE),
            self.server_id,
            session,
            max(0, int(now * 1e6)),
            FLAG_TOKEN if self.config.token else 0,
            self.config.params,
            bytes(16),
        )
        challenge = challenge._replace(cookie=cookie(self._secret, _address_bytes(addr), challenge))
        self._outbox.append((encode_challenge(challenge), addr))

    def _on_proof(self, data: bytes, addr: Address, now: float) -> None:
        proof = decode_proof(data)
        c = proof.challenge
        if c.server_id != self.server_id:
            # A challenge from before a restart: tell the client at once.
            self._count("stale_proof")
            self._reset(c.session, len(data), addr, now)
            return
        if not hmac.compare_digest(c.cookie, cookie(self._secret, _address_bytes(addr), c)):
            self._count("bad_cookie")
            return
        age = now - c.issued_us / 1e6
        if not -0.001 <= age <= self.config.cookie_lifetime:
            self._count("expired_cookie")
            return
        conn = self.connections.get(c.session)
        if conn is not None:
            if conn.client_nonce == proof.hello.nonce and conn.addr == addr:
                conn._resend_welcome()  # our welcome was lost
            else:
                self._count("session_in_use")
            return
        self._expire_nonces(now)
        if proof.hello.nonce in self._used_nonces:
            self._count("replayed_proof")
            return
        keys = derive_keys(self.config.token, proof.hello, c)
        if not hmac.compare_digest(proof.proof, keys.client_proof):
            self._count("bad_proof")
            return
        if len(self.connections) >= self.config.max_connections:
            self._count("too_many_connections")
            return
        expires = c.issued_us / 1e6 + self.config.cookie_lifetime
        self._used_nonces[proof.hello.nonce] = expires
        self._nonce_expiry.append((expires, proof.hello.nonce))
        conn = ServerConnection(self.config, self._random, addr, proof, keys, now)
        conn._on_event = self._notify
        if 0 < age < self.config.initial_rtt:
            conn.rtt.update(age)  # challenge to proof: a round trip
        self.connections[c.session] = conn
        conn._establish(now)

    def _reset(self, session: int, request_size: int, addr: Address, now: float) -> None:
        # Never larger than what caused it, and rate-limited: a spoofed
        # source gets no more than it sent, and not often.
        if session == 0 or request_size < RESET_SIZE or self._resets.ready_at(RESET_SIZE, now) > now:
            return
        self._resets.take(RESET_SIZE, now)
        self._outbox.append((encode_reset(session, reset_tag(self.config.token, session)), addr))

    def _expire_nonces(self, now: float) -> None:
        expiry = self._nonce_expiry
        while expiry and expiry[0][0] < now:
            _, nonce = expiry.popleft()
            self._used_nonces.pop(nonce, None)


"""Loss recovery: what got through, what was lost, when to try again, how fast.

Theory of operation.  This follows QUIC's loss detection and congestion
control (RFC 9002), trimmed to one packet-number space:

- Packet numbers only grow and are never reused; a retransmission carries the
  lost *data* in a new packet (§2), so every acknowledgment names exactly one
  transmission and every RTT sample is unambiguous (no Karn's rule needed).
- The RTT estimator keeps ``latest``, ``smoothed``, ``var`` and ``min`` as
  §5.3 does, discounting the peer's reported ack delay.  An ACK that reports
  holding the packet longer than the peer's max_ack_delay is a late repeat of
  a lost one and gives no sample (it would measure the repeat, not the path).
- A packet is lost once a packet sent :data:`K_PACKET_THRESHOLD` later is
  acknowledged, or once it is older than 9/8 of the RTT when a later one is
  (§6.1).  The probe timeout (PTO, §6.2) fires when nothing is acknowledged
  for ``smoothed + max(4 var, 1 ms) + max_ack_delay``; it doubles each time it
  fires in a row and resets on an acknowledgment.  The peer's max_ack_delay
  is left out when the last packet asked for an immediate ACK (ACK_NOW, as
  the IMMEDIATE_ACK of draft-ietf-quic-ack-frequency): the peer will not
  delay it, and a small window that waits out 25 ms per round trip crawls.
- Congestion control is NewReno (§7.3): slow start, then one packet more per
  round trip; a loss halves the window once per round trip.  One departure:
  a loss while the path shows no queue (``smoothed - min`` small) and the
  loss rate is moderate is taken for random loss, which ends slow start but
  does not halve the window.  Halving on every random loss (a radio link, a
  lossy test link) would hold the window near ``1.2 / sqrt(loss)`` packets
  (the Mathis formula), about 4 at 10 % loss, however wide the path; the same
  delay-based tell is what TCP Veno uses.  A queue that builds (over
  :data:`K_QUEUE_DELAY` and half the minimum RTT), a loss rate over
  :data:`K_RANDOM_LOSS`, or a run of probe timeouts (persistent congestion,
  §7.6) still shrink it; so a lossy path without queues is used fully up to
  25 % loss, and a congested one is backed off from as NewReno would.

Also here: the receiver's set of packet numbers seen (:class:`RangeSet`, what
ACK frames are made from), a token bucket for the per-connection rate limit,
and the best-effort events channel's accounting, which reports loss instead
of repairing it (as RTCP receiver reports do, RFC 3550 §6.4): the sender
counts every item it sends *or sheds*, the receiver counts what arrives, and
the difference is what the receiver reports lost.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple

from .fragments import OutMessage
from .packet import Ack, BadPacket

#: RFC 9002 §6.1.1: "SHOULD NOT use a packet threshold less than 3".
K_PACKET_THRESHOLD = 3
#: RFC 9002 §6.1.2.
K_TIME_THRESHOLD = 9 / 8
#: RFC 9002 §6.1.2: timer granularity.
K_GRANULARITY = 0.001
#: RFC 9002 §6.2.2: before any sample, giving a first PTO of about 1 s.
K_INITIAL_RTT = 0.333
#: Probe timeouts in a row taken as persistent congestion (RFC 9002 §7.6 uses
#: the span of lost packets; three backed-off PTOs span more than it asks).
K_PERSISTENT_CONGESTION_THRESHOLD = 3
#: The longest a backed-off PTO waits (``reference/runtime-anchors.md`` §6.5).
K_MAX_PTO = 60.0
#: Queueing delay below this is not taken for a queue (see RttEstimator.queueing).
K_QUEUE_DELAY = 0.004
#: A loss rate above this is congestion even with no queue in sight.
K_RANDOM_LOSS = 0.25
#: How fast the loss-rate average forgets, per packet.
K_LOSS_GAIN = 1 / 32
#: Received packet-number ranges remembered; older numbers count as seen.
K_MAX_RANGES = 64


class RttEstimator:
    """Round-trip time, as RFC 9002 §5 estimates it."""

    def __init__(self, initial_rtt: float = K_INITIAL_RTT) -> None:
        self.latest = 0.0
        self.smoothed = initial_rtt
        self.var = initial_rtt / 2
        self.min = math.inf
        self.samples = 0

    def update(self, latest: float, ack_delay: float = 0.0, max_ack_delay: float = 0.0) -> None:
        self.latest = latest
        if self.samples == 0:
            self.min = latest
            self.smoothed = latest
            self.var = latest / 2
        else:
            self.min = min(self.min, latest)
            ack_delay = min(ack_delay, max_ack_delay)
            # The peer's delay is discounted only as far as it keeps the
            # sample above the minimum (RFC 9002 §5.3).
            adjusted = latest - ack_delay if latest >= self.min + ack_delay else latest
            self.var = 0.75 * self.var + 0.25 * abs(self.smoothed - adjusted)
            self.smoothed = 0.875 * self.smoothed + 0.125 * adjusted
        self.samples += 1

    def pto(self, max_ack_delay: float) -> float:
        """The probe timeout before backoff (RFC 9002 §6.2.1)."""
        return self.smoothed + max(4 * self.var, K_GRANULARITY) + max_ack_delay

    def loss_delay(self) -> float:
        """How long after a later packet is acknowledged an earlier one is lost."""
        return max(K_TIME_THRESHOLD * max(self.smoothed, self.latest), K_GRANULARITY)

    def queueing(self) -> bool:
        """Whether the path shows a standing queue: the smoothed RTT above its
        floor by half the floor and by 4 ms at least (jitter and reordering
        alone should not pass for it)."""
        return self.samples > 0 and self.smoothed - self.min > max(self.min / 2, K_QUEUE_DELAY)


class RangeSet:
    """Packet numbers seen, as sorted disjoint ranges, for duplicates and ACKs.

    Only the newest :data:`K_MAX_RANGES` ranges are kept; anything below them
    (``floor``) counts as seen, so a replay of an old packet is a duplicate
    however old it is.
    """

    def __init__(self, limit: int = K_MAX_RANGES) -> None:
        self.limit = limit
        self.starts: List[int] = []
        self.stops: List[int] = []  # exclusive
        self.floor = 0

    def __contains__(self, n: int) -> bool:
        if n < self.floor:
            return True
        i = bisect_right(self.starts, n) - 1
        return i >= 0 and n < self.stops[i]

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def largest(self) -> int:
        return self.stops[-1] - 1 if self.stops else -1

    def add(self, n: int) -> None:
        """Add ``n``, which must not be in the set."""
        starts, stops = self.starts, self.stops
        if not stops or n > stops[-1]:
            starts.append(n)
            stops.append(n + 1)
        elif n == stops[-1]:
            stops[-1] = n + 1
        else:
            i = bisect_right(starts, n) - 1
            join_left = i >= 0 and stops[i] == n
            join_right = i + 1 < len(starts) and starts[i + 1] == n + 1
            if join_left and join_right:
                stops[i] = stops[i + 1]
                del starts[i + 1], stops[i + 1]
            elif join_left:
                stops[i] = n + 1
            elif join_right:
                starts[i + 1] = n
            else:
                starts.insert(i + 1, n)
                stops.insert(i + 1, n + 1)
        if len(starts) > self.limit:
            del starts[0], stops[0]
            self.floor = starts[0]

    def descending(self, limit: int) -> List[Tuple[int, int]]:
        """The newest ``limit`` ranges as inclusive (low, high), highest first."""
        n = len(self.starts)
        return [(self.starts[i], self.stops[i] - 1) for i in range(n - 1, max(n - 1 - limit, -1), -1)]


class SentPacket:
    """What an ack-eliciting packet carried, to act on its fate."""

    __slots__ = ("number", "time_sent", "size", "fragments", "events_top", "mark", "app_limited")

    def __init__(self, number: int, time_sent: float, size: int) -> None:
        self.number = number
        self.time_sent = time_sent
        self.size = size
        self.fragments: List[Tuple[OutMessage, int]] = []
        #: (next seq, cum) after the last events frame in it, if any
        self.events_top: Optional[Tuple[int, int]] = None
        #: the MARK frame's (next seq, cum), if it carried one
        self.mark: Optional[Tuple[int, int]] = None
        #: sent with the window under-used: its ack must not grow the window
        self.app_limited = False


class NewReno:
    """A congestion window in bytes (RFC 9002 §7), see the module docstring."""

    def __init__(self, mtu: int) -> None:
        self.mtu = mtu
        self.min_window = 2 * mtu
        self.cwnd = float(min(10 * mtu, max(14720, 2 * mtu)))
        self.ssthresh = math.inf
        self.recovery_start = -math.inf
        self.halvings = 0

    def on_acked(self, pkt: SentPacket) -> None:
        if pkt.app_limited or pkt.time_sent <= self.recovery_start:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd += pkt.size
        else:
            self.cwnd += self.mtu * pkt.size / self.cwnd

    def on_lost(self, newest_lost_sent: float, now: float, congestive: bool) -> None:
        if newest_lost_sent <= self.recovery_start:
            return  # one reaction per round trip (RFC 9002 §7.3.2)
        self.recovery_start = now
        if congestive:
            self.halvings += 1
            self.cwnd = max(self.cwnd / 2, self.min_window)
        self.ssthresh = self.cwnd

    def on_persistent_congestion(self) -> None:
        self.cwnd = self.min_window
        self.recovery_start = -math.inf


class LossMeter:
    """A moving average of the fraction of packets lost."""

    def __init__(self) -> None:
        self.rate = 0.0

    def update(self, acked: int, lost: int) -> None:
        keep = 1.0 - K_LOSS_GAIN
        if acked:
            self.rate *= keep**acked
        if lost:
            self.rate = 1.0 - (1.0 - self.rate) * keep**lost


class Recovery:
    """Sent packets in flight, acknowledgments, loss detection and the PTO."""

    def __init__(
        self, rtt: RttEstimator, cc: NewReno, peer_max_ack_delay: float, max_pto: float = K_MAX_PTO
    ) -> None:
        self.rtt = rtt
        self.max_pto = max_pto
        self.cc = cc
        self.loss = LossMeter()
        self.peer_max_ack_delay = peer_max_ack_delay
        self.sent: Dict[int, SentPacket] = {}  # ack-eliciting, in number order
        self.bytes_in_flight = 0
        self.largest_sent = -1
        self.largest_acked = -1
        self.loss_time: Optional[float] = None
        self.pto_count = 0
        self.last_eliciting: Optional[float] = None
        self.last_asked_ack_now = False
        self.packets_lost = 0

    def on_sent(self, pkt: SentPacket, ack_now: bool = False) -> None:
        self.sent[pkt.number] = pkt
        self.bytes_in_flight += pkt.size
        self.last_eliciting = pkt.time_sent
        self.last_asked_ack_now = ack_now

    def pto_duration(self) -> float:
        # A peer asked for an immediate ACK does not delay it, so its
        # max_ack_delay need not be waited out.
        return self.rtt.pto(0.0 if self.last_asked_ack_now else self.peer_max_ack_delay)

    def deadline(self) -> Optional[float]:
        """The loss-detection timer (RFC 9002 §6.2.1 SetLossDetectionTimer)."""
        if self.loss_time is not None:
            return self.loss_time
        if not self.sent or self.last_eliciting is None:
            return None
        return self.last_eliciting + min(self.pto_duration() * (1 << min(self.pto_count, 30)), self.max_pto)

    def on_ack(self, ack: Ack, now: float) -> Tuple[List[SentPacket], List[SentPacket]]:
        """Process an ACK frame; the packets it newly acknowledges, and those
        it shows lost.

        Raises:
            BadPacket: it acknowledges a packet never sent.
        """
        if ack.largest > self.largest_sent:
            raise BadPacket(0, "ack_unsent", f"ack of packet {ack.largest}, largest sent {self.largest_sent}")
        sent = self.sent
        acked: List[SentPacket] = []
        if sent:
            lowest = next(iter(sent))
            for low, high in ack.ranges:
                if high < lowest:
                    break
                for n in range(max(low, lowest), high + 1):
                    pkt = sent.pop(n, None)
                    if pkt is not None:
                        acked.append(pkt)
        if ack.largest > self.largest_acked:
            self.largest_acked = ack.largest
        if not acked:
            return acked, []
        newest = max(acked, key=_number)
        ack_delay = ack.delay_us / 1e6
        # A sample only from a timely ACK: one held longer than the peer's
        # max_ack_delay repeats an ACK that was lost, and would measure how
        # late the repeat came instead of the path.
        if newest.number == ack.largest and ack_delay <= self.peer_max_ack_delay + K_GRANULARITY:
            self.rtt.update(now - newest.time_sent, ack_delay, self.peer_max_ack_delay)
        for pkt in acked:
            self.bytes_in_flight -= pkt.size
            self.cc.on_acked(pkt)
        self.loss.update(len(acked), 0)
        self.pto_count = 0
        return acked, self._detect_lost(now)

    def _detect_lost(self, now: float) -> List[SentPacket]:
        # RFC 9002 §6.1 DetectAndRemoveLostPackets.
        self.loss_time = None
        delay = self.rtt.loss_delay()
        largest = self.largest_acked
        lost: List[SentPacket] = []
        for n, pkt in self.sent.items():
            if n > largest:
                break
            # The same sum as the timer's, so the timer's instant counts.
            t = pkt.time_sent + delay
            if t <= now or largest - n >= K_PACKET_THRESHOLD:
                lost.append(pkt)
            elif self.loss_time is None or t < self.loss_time:
                self.loss_time = t
        if lost:
            for pkt in lost:
                del self.sent[pkt.number]
                self.bytes_in_flight -= pkt.size
            self.packets_lost += len(lost)
            self.loss.update(0, len(lost))
            congestive = self.rtt.queueing() or self.loss.rate > K_RANDOM_LOSS
            self.cc.on_lost(max(p.time_sent for p in lost), now, congestive)
        return lost

    def on_timeout(self, now: float) -> Tuple[List[SentPacket], bool]:
        """The timer fired (RFC 9002 §6.2.1 OnLossDetectionTimeout): packets
        now lost, and whether to send probes."""
        if self.loss_time is not None:
            if now < self.loss_time:
                return [], False
            return self._detect_lost(now), False
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return [], False
        self.pto_count += 1
        if self.pto_count >= K_PERSISTENT_CONGESTION_THRESHOLD:
            self.cc.on_persistent_congestion()
        return [], True


def _number(pkt: SentPacket) -> int:
    return pkt.number


class TokenBucket:
    """A send-rate limit: ``rate`` bytes per second, bursts up to ``burst``."""

    def __init__(self, rate: Optional[float], burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.time: Optional[float] = None

    def _refill(self, now: float) -> None:
        if self.time is None or now > self.time:
            if self.time is not None and self.rate is not None:
                self.tokens = min(self.burst, self.tokens + (now - self.time) * self.rate)
            self.time = now

    def next_ready(self, size: int) -> float:
        """When ``size`` bytes may go, as of the last time seen."""
        if self.rate is None or self.time is None:
            return -math.inf
        return self.ready_at(size, self.time)

    def ready_at(self, size: int, now: float) -> float:
        """The earliest time ``size`` bytes may go."""
        if self.rate is None:
            return now
        self._refill(now)
        # A microsecond's worth of slack: float sums must not keep a packet
        # waiting for the last fraction of a byte.
        missing = size - self.tokens - 1e-6 * self.rate
        return now if missing <= 0 else now + missing / self.rate

    def take(self, size: int, now: float) -> None:
        if self.rate is not None:
            self._refill(now)
            self.tokens -= size


class EventsThrottle:
    """Sheds best-effort events while the path is in trouble, as ENet's packet
    throttle does: of every 32 events, ``value`` go and the rest are shed."""

    SCALE = 32

    def __init__(self) -> None:
        self.value = self.SCALE
        self._counter = 0

    def admit(self) -> bool:
        if self.value >= self.SCALE:
            return True
        # Stepping by 7 (coprime with 32) spreads the admitted ones evenly.
        self._counter = (self._counter + 7) % self.SCALE
        return self._counter < self.value

    def update(self, trouble: bool) -> None:
        """Called about once a round trip."""
        if trouble:
            self.value = max(2, self.value // 2)
        else:
            self.value = min(self.SCALE, self.value + 2)


class EventsSender:
    """The events channel's sending side: a queue that sheds, and the counts.

    ``seq`` numbers the messages sent; ``cum`` counts the items sent *or shed*
    so far, so shedding an item is just counting it without sending it, and
    the receiver's sums still add up.
    """

    def __init__(self, queue_limit: int, max_delay: float) -> None:
        self.queue_limit = queue_limit
        self.max_delay = max_delay
        self.next_seq = 0
        self.cum = 0
        self.queue: Deque[Tuple[bytes, int, float]] = deque()
        self.queued_bytes = 0
        self.throttle = EventsThrottle()
        self.items_offered = 0
        self.items_sent = 0
        self.items_shed = 0
        self.last_activity = 0.0
        self.acked: Tuple[int, int] = (0, 0)  # the newest (next seq, cum) the peer has
        self.mark_in_flight: Optional[Tuple[int, int]] = None
        self._shed_since: Optional[float] = None  # items shed and not yet told

    def offer(self, data: bytes, items: int, now: float) -> bool:
        self.items_offered += items
        self.last_activity = now
        if not self.throttle.admit():
            self.shed(items, now)
            return False
        self.queue.append((data, items, now))
        self.queued_bytes += len(data)
        while self.queued_bytes > self.queue_limit:
            self._shed_oldest(now)
        return True

    def shed(self, items: int, now: float) -> None:
        self.cum += items
        self.items_shed += items
        if self._shed_since is None:
            self._shed_since = now

    def _shed_oldest(self, now: float) -> None:
        data, items, _ = self.queue.popleft()
        self.queued_bytes -= len(data)
        self.shed(items, now)

    def head_size(self, now: float) -> Optional[int]:
        """The size of the next message to send, after shedding stale ones."""
        queue = self.queue
        while queue and now - queue[0][2] > self.max_delay:
            self._shed_oldest(now)
        return len(queue[0][0]) if queue else None

    def pop(self, now: float) -> Tuple[int, int, int, bytes]:
        """The next message as (seq, cum, items, data)."""
        data, items, _ = self.queue.popleft()
        self.queued_bytes -= len(data)
        self.cum += items
        self.items_sent += items
        seq = self.next_seq
        self.next_seq += 1
        self.last_activity = now
        self._shed_since = None  # the message carries the count
        return seq, self.cum, items, data

    @property
    def top(self) -> Tuple[int, int]:
        return self.next_seq, self.cum

    def mark_due_at(self, delay: float) -> Optional[float]:
        """When to tell the peer where the channel stands, if it may not know:
        the last messages were lost, or the last items were shed."""
        top = (self.next_seq, self.cum)
        if self.queue or top == self.acked or top == self.mark_in_flight:
            return None
        due = self.last_activity + delay
        if self._shed_since is not None:
            # Everything offered is being shed: say so now and then, not
            # only once the offers stop.
            due = min(due, self._shed_since + 4 * delay)
        return due

    def mark_sent(self) -> Tuple[int, int]:
        self.mark_in_flight = self.top
        self._shed_since = None
        return self.mark_in_flight

    def on_acked(self, top: Tuple[int, int]) -> None:
        if top > self.acked:
            self.acked = top
        if top == self.mark_in_flight:
            self.mark_in_flight = None

    def on_mark_lost(self, mark: Tuple[int, int]) -> None:
        if mark == self.mark_in_flight:
            self.mark_in_flight = None


#: Received messages past a gap kept before the gap is given up for lost.
K_MAX_EVENTS_PENDING = 1024


class EventsReceiver:
    """The events channel's receiving side: delivers and accounts in order.

    The accounting walks ``seq`` in order: each message covers the items
    ``(cum - items, cum]``; items between the last accounted one and a
    message's first were lost (in the network, or shed by the sender).  A gap
    in ``seq`` may be reordering, so it is given up for lost only after
    ``reorder`` seconds (the caller's time threshold); a message that arrives
    after its gap was given up is not delivered, since it was reported lost.

    Delivery follows the accounting (:meth:`take`): a message past a gap waits
    until the gap fills or is given up.  A profile's events are in order
    within each thread (a return after its call), and readers rely on it.
    ENet's unreliable sequenced packets keep order by dropping late ones;
    waiting the reorder delay first means reordering on the path costs
    latency, not events.
    """

    def __init__(self, counters: Dict[str, int]) -> None:
        self.counters = counters
        self.next_seq = 0
        self.resolved = 0  # items accounted for, delivered or lost
        #: seq -> (cum, items, arrival, data), past a gap, in arrival order:
        #: the first one's arrival is when the first gap was known.
        self.pending: Dict[int, Tuple[int, int, float, bytes]] = {}
        self._ready: List[Tuple[bytes, int]] = []  # (data, items) to deliver, in seq order
        self.mark: Tuple[int, int] = (0, 0)
        self.mark_at = 0.0  # arrival of the oldest MARK still beyond next_seq
        self.gap_since: Optional[float] = None
        self.items_received = 0
        self.items_lost = 0
        self.duplicates = 0
        # The latest gaps given up, to tell a late message from a duplicate.
        self._given_up: Deque[Tuple[int, int]] = deque(maxlen=64)

    def on_events(self, seq: int, cum: int, items: int, now: float, data: bytes = b"") -> Tuple[bool, int]:
        """Whether the message is taken (delivered by :meth:`take` now or once
        the gaps before it are settled), and how many items are now known lost."""
        if seq < self.next_seq:
            if any(lo <= seq < hi for lo, hi in self._given_up):
                _count(self.counters, "events_late")
            else:
                self.duplicates += 1
            return False, 0
        if seq in self.pending:
            self.duplicates += 1
            return False, 0
        self.pending[seq] = (cum, items, now, data)
        self.items_received += items
        lost = self._advance()
        if len(self.pending) > K_MAX_EVENTS_PENDING:
            lost += self._give_up()
        self._track_gap(now)
        return True, lost

    def on_mark(self, next_seq: int, cum: int, now: float) -> int:
        if (next_seq, cum) <= self.mark:
            return 0
        if self.mark[0] <= self.next_seq:
            self.mark_at = now
        self.mark = (next_seq, cum)
        lost = self._advance()
        self._track_gap(now)
        return lost

    def take(self) -> List[Tuple[bytes, int]]:
        """The messages now in order, as ``(data, items)``: call after each
        :meth:`on_events`, :meth:`on_mark` and :meth:`on_timer`."""
        ready, self._ready = self._ready, []
        return ready

    def deadline(self, reorder: float) -> Optional[float]:
        return None if self.gap_since is None else self.gap_since + reorder

    def on_timer(self, now: float, reorder: float) -> int:
        """Gives up every gap known for ``reorder`` seconds: each one at
        once, not one per timer (at 30% loss the gaps queued up behind each
        other, and the last loss was told half a minute late)."""
        lost = 0
        while self.gap_since is not None and now >= self.gap_since + reorder:
            lost += self._give_up()
            self._track_gap(now)
        return lost

    def _advance(self) -> int:
        lost = 0
        pending = self.pending
        while self.next_seq in pending:
            cum, items, _, data = pending.pop(self.next_seq)
            self._ready.append((data, items))
            first = cum - items
            if first > self.resolved:
                lost += first - self.resolved
            elif first < self.resolved:
                _count(self.counters, "events_accounting")
            self.resolved = max(self.resolved, cum)
            self.next_seq += 1
        mark_seq, mark_cum = self.mark
        if mark_seq == self.next_seq and mark_cum > self.resolved:
            lost += mark_cum - self.resolved
            self.resolved = mark_cum
        self.items_lost += lost
        return lost

    def _give_up(self) -> int:
        """Declare the first gap lost."""
        ends = list(self.pending)
        if self.mark[0] > self.next_seq:
            ends.append(self.mark[0])
        if ends:
            end = min(ends)
            self._given_up.append((self.next_seq, end))
            self.next_seq = end
        return self._advance()

    def _track_gap(self, now: float) -> None:
        """``gap_since``: when the first gap was known, by the oldest arrival
        past it (a message or a MARK), None without a gap."""
        since: Optional[float] = None
        if self.pending:
            since = next(iter(self.pending.values()))[2]
        if self.mark[0] > self.next_seq and (since is None or self.mark_at < since):
            since = self.mark_at
        self.gap_since = since


def _count(counters: Dict[str, int], key: str) -> None:
    counters[key] = counters.get(key, 0) + 1

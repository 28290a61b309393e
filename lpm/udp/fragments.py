"""Reliable messages cut into fragments, and put back together with limits.

Sending: a message is cut at fixed boundaries (every fragment but the last
carries exactly ``frag_size`` bytes), so a retransmission carries the same
bytes at the same offset as the original and the receiver can treat any
partial overlap as an attack rather than as something to merge.  Fragments
are acknowledged one by one; a message leaves the sender's window once it and
every message before it on its channel are acknowledged whole, because until
then the receiver may still be holding it (complete, waiting for an earlier
one).

Receiving: fragments of a message are kept until it is complete, complete
messages until every earlier one on the channel has been delivered (reliable
channels are ordered, as ENet's reliable channels).  A peer could make us
hold memory without end, so (as the reassembly caps of
``reference/runtime-anchors.md`` §6.5 ask):

- every stored byte, plus :data:`K_FRAGMENT_OVERHEAD` per fragment, is
  charged to a per-connection :class:`MemoryBudget`; the sender keeps under
  the same budget, which the receiver announces in the handshake, so a
  correct peer never meets the limit and a fragment over it is a bomb;
- fragments other than a message's last carry at least
  :data:`K_MIN_FRAGMENT` bytes, so one message cannot be a million entries;
- a message id at most :data:`K_MAX_MESSAGES_AHEAD` past the next expected one;
- a message larger than the receiver's ``max_message`` is refused at once;
- a partial message that gets no new fragment for the reassembly timeout
  ends the connection: a reliable channel cannot skip it, and a live sender
  would have repaired it long before.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple

from .packet import BadPacket, Channel, MessageFrame

#: Bytes charged per stored fragment on top of its data: what a dict entry,
#: a list slot and a bytes object cost in CPython, roughly.
K_FRAGMENT_OVERHEAD = 64
#: Every fragment but a message's last is at least this long; a sender's
#: fragments are (MTU 1200 - headers) about 1100 bytes.
K_MIN_FRAGMENT = 512
#: How far past the next undelivered message a message id may be.
K_MAX_MESSAGES_AHEAD = 1024


def message_cost(size: int, frag_size: int) -> int:
    """What a receiver is charged, at most, while it holds a message."""
    nfrags = max(1, -(-size // frag_size))
    return size + nfrags * K_FRAGMENT_OVERHEAD


class MemoryBudget:
    """Bytes a connection may hold for reassembly and reordering."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def release(self, n: int) -> None:
        self.used -= n


class OutMessage:
    """A reliable message being sent, and which of its fragments got through."""

    __slots__ = ("channel", "msg_id", "data", "total", "frag_size", "nfrags", "acked", "queued", "n_acked", "next_frag", "cost")

    def __init__(self, channel: Channel, msg_id: int, data: bytes, frag_size: int) -> None:
        self.channel = channel
        self.msg_id = msg_id
        self.data = data
        self.total = len(data)
        self.frag_size = frag_size
        self.nfrags = max(1, -(-len(data) // frag_size))
        self.acked = bytearray(self.nfrags)
        self.queued = bytearray(self.nfrags)  # waiting in the retransmission queue
        self.n_acked = 0
        self.next_frag = 0
        self.cost = message_cost(len(data), frag_size)

    @property
    def done(self) -> bool:
        return self.n_acked == self.nfrags

    def fragment(self, k: int) -> Tuple[int, bytes]:
        offset = k * self.frag_size
        return offset, self.data[offset : offset + self.frag_size]

    def fragment_len(self, k: int) -> int:
        return min(self.frag_size, self.total - k * self.frag_size)


class SendWindow:
    """The share of the peer's receive buffer our unreleased messages take."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class ReliableSender:
    """One reliable channel's outgoing messages, in order."""

    def __init__(self, channel: Channel, frag_size: int, window: SendWindow) -> None:
        self.channel = channel
        self.frag_size = frag_size
        self.window = window
        self.next_id = 0
        self.waiting: Deque[OutMessage] = deque()  # not started
        self.open: Dict[int, OutMessage] = {}  # started, not released; in id order
        self._current: Optional[OutMessage] = None  # the one whose fragments go out next
        self.queued_bytes = 0  # bytes of messages not started yet

    def push(self, data: bytes) -> int:
        if self.next_id > 0xFFFFFFFF:
            raise OverflowError("message ids of this channel are used up")
        msg = OutMessage(self.channel, self.next_id, data, self.frag_size)
        self.next_id += 1
        self.waiting.append(msg)
        self.queued_bytes += len(data)
        return msg.msg_id

    def peek(self) -> Optional[OutMessage]:
        """The message whose next fragment should go out, if any may."""
        msg = self._current
        if msg is not None and msg.next_frag < msg.nfrags:
            return msg
        if not self.waiting:
            return None
        msg = self.waiting[0]
        if self.open:
            oldest = next(iter(self.open))
            if msg.msg_id - oldest >= K_MAX_MESSAGES_AHEAD:
                return None
        if self.window.used + msg.cost > self.window.limit:
            return None
        self.waiting.popleft()
        self.queued_bytes -= len(msg.data)
        self.window.used += msg.cost
        self.open[msg.msg_id] = msg
        self._current = msg
        return msg

    def on_acked(self, msg: OutMessage, k: int) -> None:
        if msg.acked[k]:
            return
        msg.acked[k] = 1
        msg.n_acked += 1
        if msg.done:
            # Release from the front only: the receiver holds a later message
            # until every earlier one is through.
            open_ = self.open
            while open_:
                mid = next(iter(open_))
                head = open_[mid]
                if not head.done:
                    break
                del open_[mid]
                self.window.used -= head.cost
                head.data = b""

    @property
    def idle(self) -> bool:
        """Nothing left to send or to be acknowledged."""
        return not self.waiting and not self.open


class Reassembly:
    """The fragments of one message received so far."""

    __slots__ = ("total", "offsets", "pieces", "received", "cost", "last_progress")

    def __init__(self, total: int, now: float) -> None:
        self.total = total
        self.offsets: List[int] = []
        self.pieces: Dict[int, bytes] = {}
        self.received = 0
        self.cost = 0
        self.last_progress = now

    def add(self, offset: int, data: bytes, budget: MemoryBudget, now: float) -> bool:
        """Store a fragment; False if it was a duplicate.

        Raises:
            BadPacket: too small, overlapping another, or over the budget.
        """
        length = len(data)
        if offset + length != self.total and length < K_MIN_FRAGMENT:
            raise BadPacket(0, "fragment_too_small", f"fragment of {length} bytes that is not a message's last")
        offsets = self.offsets
        i = bisect_left(offsets, offset)
        if i < len(offsets) and offsets[i] == offset:
            if len(self.pieces[offset]) == length:
                return False
            raise BadPacket(0, "fragment_overlap", f"two fragments at offset {offset} of different lengths")
        if i > 0:
            before = offsets[i - 1]
            if before + len(self.pieces[before]) > offset:
                raise BadPacket(0, "fragment_overlap", f"fragment at {offset} overlaps the one at {before}")
        if i < len(offsets) and offset + length > offsets[i]:
            raise BadPacket(0, "fragment_overlap", f"fragment at {offset} overlaps the one at {offsets[i]}")
        cost = length + K_FRAGMENT_OVERHEAD
        if not budget.charge(cost):
            raise BadPacket(0, "reassembly_memory", f"fragment over the receive buffer of {budget.limit} bytes")
        offsets.insert(i, offset)
        self.pieces[offset] = data
        self.received += length
        self.cost += cost
        self.last_progress = now
        return True

    @property
    def complete(self) -> bool:
        # No overlaps and nothing beyond total, so the lengths adding up means
        # every byte is there.
        return self.received == self.total

    def assemble(self) -> bytes:
        pieces = self.pieces
        return b"".join(pieces[o] for o in self.offsets)


class ReliableReceiver:
    """One reliable channel's incoming messages, delivered once and in order."""

    def __init__(self, channel: Channel, budget: MemoryBudget, max_message: int, timeout: float) -> None:
        self.channel = channel
        self.budget = budget
        self.max_message = max_message
        self.timeout = timeout
        self.next_id = 0
        self.partial: Dict[int, Reassembly] = {}
        self.ready: Dict[int, bytes] = {}  # complete, waiting for an earlier one
        self.duplicates = 0

    def on_fragment(self, frame: MessageFrame, now: float) -> List[bytes]:
        """Take a fragment; the messages it makes deliverable, in order.

        Raises:
            BadPacket: the fragment is dropped (see the module docstring).
        """
        mid = frame.msg_id
        if mid < self.next_id or mid in self.ready:
            self.duplicates += 1
            return []
        if mid - self.next_id >= K_MAX_MESSAGES_AHEAD:
            raise BadPacket(0, "message_window", f"message {mid} too far past {self.next_id}")
        total = frame.total
        if total > self.max_message:
            raise BadPacket(0, "message_too_large", f"message of {total} bytes over the limit of {self.max_message}")
        r = self.partial.get(mid)
        if r is None:
            if frame.offset == 0 and len(frame.data) == total:
                # The common case: a message in one fragment.
                if mid == self.next_id:
                    self.next_id += 1
                    return [frame.data, *self._deliverable()] if self.ready else [frame.data]
                if not self.budget.charge(total):
                    raise BadPacket(0, "reassembly_memory", f"message over the receive buffer of {self.budget.limit}")
                self.ready[mid] = frame.data
                return []
            r = Reassembly(total, now)
            r.add(frame.offset, frame.data, self.budget, now)
            self.partial[mid] = r  # only once a fragment is in: no empty entries
        elif r.total != total:
            raise BadPacket(0, "fragment_mismatch", f"message {mid} said {r.total} bytes, now {total}")
        elif not r.add(frame.offset, frame.data, self.budget, now):
            self.duplicates += 1
            return []
        if not r.complete:
            return []
        del self.partial[mid]
        data = r.assemble()
        self.budget.release(r.cost)
        if mid == self.next_id:
            self.next_id += 1
            return [data, *self._deliverable()]
        # Cheaper held whole than in pieces, so this always fits.
        self.budget.charge(len(data))
        self.ready[mid] = data
        return []

    def _deliverable(self) -> List[bytes]:
        out = []
        ready = self.ready
        while self.next_id in ready:
            data = ready.pop(self.next_id)
            self.budget.release(len(data))
            out.append(data)
            self.next_id += 1
        return out

    def deadline(self) -> Optional[float]:
        """When the stalest partial message times out."""
        if not self.partial:
            return None
        return min(r.last_progress for r in self.partial.values()) + self.timeout

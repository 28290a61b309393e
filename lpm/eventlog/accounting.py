"""Proving from a stream that nothing was lost silently.

A leech gives every event of a thread a sequence number, written or dropped
(see :mod:`lpm.leech.pure`).  A block says whose it is and the number of its
first counted event (``PyBlockInfo``); a dropped run is reported by one
``PyDataLoss``; ``PySeqPoint`` says how many events a thread has produced so
far, and the one after its ``StopThread`` is final.  So per thread::

    received + reported lost == produced

where *produced* counts from the first sequence number this reader saw (a
reader that joined late did not miss what came before it: it was never sent
to it).  A gap between what one block ends with and what the next begins with
is loss nobody reported: :attr:`ThreadAccount.gaps` counts such events, and
it must stay 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import Event, EventBlock, PyBlockInfo, PyDataLoss, PySeqPoint, StopThread


@dataclass
class ThreadAccount:
    """What one reader knows of one thread's events."""

    thread: int
    first_seq: int | None = None
    next_seq: int | None = None  # sequence number the next event must carry
    received: int = 0
    lost: int = 0
    gaps: int = 0
    produced: int | None = None  # latest sequence point
    finished: bool = False

    def skip_to(self, seq: int) -> None:
        """The next event (or reported loss) carries ``seq``: a jump past what
        was expected is a gap; the first one seen starts the count."""
        if self.next_seq is None:
            self.first_seq = seq
        elif seq > self.next_seq:
            self.gaps += seq - self.next_seq
        self.next_seq = seq

    @property
    def balanced(self) -> bool:
        """``received + lost`` equals what the thread produced since this reader joined."""
        if self.produced is None:
            return False
        start = self.first_seq if self.first_seq is not None else self.produced
        return self.gaps == 0 and self.received + self.lost == self.produced - start

    @property
    def unreported(self) -> int:
        """Events produced that neither arrived nor were reported lost."""
        if self.produced is None:
            return 0
        start = self.first_seq if self.first_seq is not None else self.produced
        return self.produced - start - self.received - self.lost

    @property
    def in_flight(self) -> int:
        """Events produced (by the latest sequence point) that have not arrived yet."""
        if self.produced is None or self.next_seq is None:
            return 0
        return max(0, self.produced - self.next_seq)


@dataclass
class Accounting:
    """Feed it every event of one lpm stream, in order."""

    threads: dict[int, ThreadAccount] = field(default_factory=dict)
    _block_thread: int | None = None

    def thread(self, number: int) -> ThreadAccount:
        acct = self.threads.get(number)
        if acct is None:
            acct = self.threads[number] = ThreadAccount(number)
        return acct

    @property
    def block_thread(self) -> int | None:
        """The thread whose block the events now come from (its PyBlockInfo
        seen), or None."""
        return self._block_thread

    def reset(self) -> None:
        """A new header: the writer restarted, sequence numbers go on."""
        self._block_thread = None

    def add_plain(self, count: int) -> None:
        """``count`` events that are none of the kinds :meth:`add` looks into
        (a server's fast path counts them without decoding them)."""
        owner = self._block_thread
        if owner is None:
            return
        acct = self.thread(owner)
        acct.received += count
        if acct.next_seq is not None:
            acct.next_seq += count

    def add(self, ev: Event) -> None:
        kind = type(ev)
        if kind is EventBlock:
            self._block_thread = None
            return
        if kind is PyBlockInfo:
            assert isinstance(ev, PyBlockInfo)
            self.thread(ev.thread).skip_to(ev.first_seq)
            self._block_thread = ev.thread
            return
        if kind is PySeqPoint:
            assert isinstance(ev, PySeqPoint)
            acct = self.thread(ev.thread)
            if acct.produced is None or ev.seq > acct.produced:
                acct.produced = ev.seq
        elif kind is StopThread:
            assert isinstance(ev, StopThread)
            if ev.thread in self.threads:
                self.threads[ev.thread].finished = True
        if kind is PyDataLoss:
            # Takes no sequence number; says whose events were lost.
            assert isinstance(ev, PyDataLoss)
            acct = self.thread(ev.thread)
            acct.skip_to(ev.first_seq)
            acct.lost += ev.count
            acct.next_seq = ev.first_seq + ev.count
            return
        owner = self._block_thread
        if owner is None:
            return
        acct = self.thread(owner)  # its account may have been dropped by a bounded reader
        acct.received += 1
        if acct.next_seq is not None:
            acct.next_seq += 1

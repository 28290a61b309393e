"""The leech's buffers and writer in pure Python: the specification of leech.c.

``leech.c`` implements this module in C; where the C library cannot be built or
loaded (or ``LPM_PUREPYTHON=1``), this one runs instead.  For the same calls
under a fixed clock both write the same bytes, and a test holds them to it.
Change one, change the other.

Theory of operation
-------------------

Every thread that emits an event gets a *thread state*: an lpm thread number
(1, 2, ... in order of first appearance, never reused), a *slot* (the smallest
free one; the block marker's capability number, reused after the thread ends),
and a sequence number counter.  Every event a thread emits takes the next
sequence number, whether it is written or dropped; events skipped while paused
take none.

Events go into the thread's current *buffer*, taken from a pool of
``budget // buffer_size`` buffers.  When an event does not fit, the full buffer
is queued for the writer and a fresh one is taken.  When the pool is empty the
event is dropped and counted (count, bytes, first lost sequence number); the
next event that is written is preceded by one ``PyDataLoss`` record (which
takes no sequence number).  Nothing on this path blocks, allocates beyond the
buffer, or makes a system call.

After each event the thread publishes the buffer's *committed* state: bytes
used, the next sequence number, and the last timestamp, as one value, so the
writer never sees one without the other.

The writer thread, every ``flush_interval`` (or 10 ms when that is 0):

1. without a reader, tries to open the data FIFO (``O_WRONLY|O_NONBLOCK``
   fails with ``ENXIO`` when nobody reads; it retries with backoff from 10 ms,
   x1.5, up to 0.5 s); on success it writes the header first and asks the
   monitor to resend the process state;
2. turns queued full buffers into blocks, in the order they were queued, and
   returns them to the pool;
3. if ``flush_interval`` is not 0, turns the not yet written part of every
   live thread's current buffer into a block, in slot order;
4. writes without blocking, resuming partial writes; on ``EPIPE`` the reader
   is gone: what was not written is discarded and step 1 starts again.

A block is ``EventBlock(ts=first event's ts, size, end_ts=last event's ts,
cap=slot)``, then ``PyBlockInfo(ts=first event's ts, thread, first_seq)``,
then the events.  ``first_seq`` is the sequence number of the block's first
event, or, when the block opens with a ``PyDataLoss`` record, the first lost
sequence number it reports.

Without a reader, full buffers stay queued, so the backlog is bounded by the
budget and the program keeps running; new events are dropped and counted.
``stop()`` writes everything left (waiting at most ``config.stop_timeout`` for
a slow reader) and the end marker.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import gc
import os
import stat
import struct
import sys
import threading
import time

from ..eventlog import format as fmt
from . import wire
from .config import BACKOFF, MAX_TEXT, LeechConfig
from .sink import Sink
from .tracing import CallTracer

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    from typing import Callable, Deque, Iterator

HEAD = fmt.EVENT_HEAD
# Events that look for a default-named thread's own name (_name_unnamed).
NAME_TRIES = 16
_HEAD_LEN = struct.Struct(">HQH")
_MARKER_EVENT = struct.Struct(">HQIQH")
_BLOCK_INFO = struct.Struct(">HQIQ")
_LOSS = struct.Struct(">HQIQQQ")
_COUNTER = struct.Struct(">d")
_SPAN_END = struct.Struct(">HQQ")
_SPAN_BEGIN = struct.Struct(">Q")
_GC = struct.Struct(">HQQ")
_STOP = struct.Struct(">HQIHI")
_SEQ_POINT = struct.Struct(">HQIQ")
_THREAD = struct.Struct(">HQI")
_THREAD_ID = struct.Struct(">I")
_THREAD_INFO = struct.Struct(">HQIQ")

BLOCK_OVERHEAD = _MARKER_EVENT.size + _BLOCK_INFO.size


def clip_text(text: str) -> bytes:
    """UTF-8 (surrogateescape) of ``text``, cut to MAX_TEXT bytes at a character boundary."""
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_TEXT:
        return raw
    cut = MAX_TEXT
    while cut > 0 and (raw[cut] & 0xC0) == 0x80:
        cut -= 1
    return raw[:cut]


class _Buffer:
    __slots__ = ("data", "thread", "flushed", "flushed_seq", "committed")

    def __init__(self) -> None:
        self.data = bytearray()
        self.thread: _Thread | None = None
        self.flushed = 0  # bytes the writer has already turned into blocks
        self.flushed_seq = 0  # sequence number at `flushed`
        # (bytes used, next sequence number, last timestamp), published as one value
        self.committed = (0, 0, 0)


class _Thread:
    __slots__ = (
        "number",
        "slot",
        "ident",
        "native_id",
        "name",
        "seq",
        "buf",
        "lost",
        "lost_bytes",
        "lost_first",
        "gone",
        "dropped",
        "unnamed",
        "trace_epoch",
    )

    def __init__(self, number: int, slot: int, ident: int, native_id: int, name: str) -> None:
        self.number = number
        self.name = name
        self.slot = slot
        self.ident = ident
        self.native_id = native_id
        self.seq = 0
        self.buf: _Buffer | None = None
        self.lost = 0
        self.lost_bytes = 0
        self.lost_first = 0
        self.gone = False
        self.dropped = 0  # events dropped in the thread's life; only it writes this
        self.unnamed = 0  # default name: events left that look for its own (_name_unnamed)
        self.trace_epoch = 0  # the tracer's epoch this thread's hook follows (see tracing.py)


class _ExitWatch:
    """Lives in a thread's threading.local; its finalizer runs when the thread ends.

    It also runs when the thread's dict of that local is replaced while the
    thread lives: a collection during the first access in a thread runs the
    GC callback, whose event makes the dict first, and the outer access then
    installs its own empty one.  Only at the thread's end is no Python frame
    left under the finalizer; otherwise it lets go, and the thread's next
    event finds its state by ident and watches it again.
    """

    __slots__ = ("sink", "state")

    def __init__(self, sink: PureSink, state: _Thread) -> None:
        self.sink = sink
        self.state = state

    def __del__(self) -> None:
        if sys._getframe(0).f_back is not None:
            return  # not the end of the thread (see above)
        try:
            self.sink.thread_exit(self.state)
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing to report to
            pass



def _open_own(path: str, mode: int) -> int | None:
    """``path`` opened non-blocking, or None when it is not what this
    process made there: a symlink (never followed: one planted in the lpm
    directory could point the stream anywhere), or anything but a FIFO or a
    regular file of this user.

    Raises:
        OSError: the open failed otherwise (ENXIO: nobody reads yet).
    """
    try:
        fd = os.open(path, mode | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return None
        raise
    st = os.fstat(fd)
    if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISREG(st.st_mode)) or st.st_uid != os.geteuid():
        os.close(fd)
        return None
    return fd

class PureSink(Sink):
    """Per-thread buffers, a budget, and a writer thread feeding the data FIFO.

    Args:
        config: the leech settings.
        header: the eventlog header to send to every new reader.
        data_path: the data FIFO (or a regular file, which counts as a reader
            that is always there).
        control_path: the control FIFO, read by the writer thread, or None.
        on_connect: called from the writer thread when a reader arrives, so the
            process state can be sent again.
    """

    IMPLEMENTATION = "python"

    def __init__(
        self,
        config: LeechConfig,
        header: bytes,
        data_path: str,
        control_path: str | None = None,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.header = header
        self.data_path = data_path
        self.control_path = control_path
        self.on_connect = on_connect
        self._t0 = time.monotonic_ns()
        self._fixed = config.fixed_clock
        self._size = config.buffer_size
        self._free: list[_Buffer] = [_Buffer() for _ in range(config.buffers)]
        self._full: Deque[_Buffer] = collections.deque()
        self._threads: dict[int, _Thread] = {}  # live, by number
        self._by_ident: dict[int, _Thread] = {}
        self._slots: set[int] = set()
        self._next_number = 1
        self._local = threading.local()
        self._register_lock = threading.Lock()  # thread registration only, never per event
        self._paused = False
        self._stopping = threading.Event()
        self._writer: threading.Thread | None = None
        self._fd: int | None = None
        self._pending = bytearray()
        self.bytes_written = 0
        self.connections = 0
        self._dropped_gone = 0  # dropped by threads that have ended
        # ident -> native id of threads whose end is recorded: the rest of
        # their teardown (a collection there runs gc_callback) must not
        # register them again.  Pruned when the monitor sees them gone.
        self._exited: dict[int, int] = {}
        self._retiring: list[_Thread] = []  # ended, awaiting their closing block
        self.new: list[tuple[int, int, int, str]] = []  # (number, ident, native id, name) of new threads
        self._announce: list[_Thread] = []  # registered, not yet announced in a writer block
        self.tracer = CallTracer(self)
        self._control_fd: int | None = None
        self._control_buf = b""
        self._commands: Deque[str] = collections.deque(maxlen=64)

    # -- clock ---------------------------------------------------------------

    def now(self) -> int:
        """Nanoseconds since the leech started (or the fixed clock)."""
        if self._fixed is not None:
            return self._fixed
        return time.monotonic_ns() - self._t0

    @property
    def start_ns(self) -> int:
        """The monotonic clock reading that timestamps count from."""
        return self._t0

    # -- threads -------------------------------------------------------------

    @staticmethod
    @contextlib.contextmanager
    def _quiet() -> Iterator[None]:
        """No collection while the registry lock is held: a collection runs
        gc_callback, whose first event on a new thread would register it and
        take the same lock.  (leech.c allocates nothing Python there.)"""
        enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if enabled:
                gc.enable()

    def _register(self) -> _Thread | None:
        """The calling thread's state, registering it; None in a thread's
        teardown after its end was recorded (its event is dropped and counted)."""
        mine: _Thread | None = getattr(self._local, "state", None)
        if mine is not None and not mine.gone and mine.unnamed:
            self._name_unnamed(mine)
            return mine
        ident = threading.get_ident()
        native_id = threading.get_native_id()
        if self._exited.get(ident) == native_id:
            self._dropped_gone += 1
            return None
        # Once per thread, so the name can be asked here (by the time the
        # monitor looks, a short-lived thread may be gone); asked before the
        # lock, since asking may collect and so register this thread already.
        # Not current_thread(): for a thread threading does not know (one in
        # its teardown, or started with _thread) it would make a _DummyThread
        # in the program, which 3.13 then fails to delete at exit.
        known = threading._active.get(ident)  # type: ignore[attr-defined]
        name = known.name if known is not None else ""
        with self._quiet():
            st: _Thread | None = getattr(self._local, "state", None)
            if st is not None and not st.gone:
                return st
            with self._quiet(), self._register_lock:
                st = self._by_ident.get(ident)
                if st is None or st.gone or st.native_id not in (native_id, 0):
                    self._exited.pop(ident, None)
                    st = self._new_thread(ident, native_id, name)
                # The sampler may have registered this thread, native id
                # unknown, before it emitted: this is that thread.
                st.native_id = native_id
            self._local.watch = _ExitWatch(self, st)
            self._local.state = st
        if st.unnamed:
            self._name_unnamed(st)
        return st

    def _name_unnamed(self, st: _Thread) -> None:
        """A thread numbered before threading listed it (by the sampler, the
        monitor's scan, or its own first event: a collection in its start-up)
        has the default name; its next few events look for its own, which the
        monitor's scan would find only if the thread lived that long."""
        known = threading._active.get(st.ident)  # type: ignore[attr-defined]
        if known is None:
            st.unnamed -= 1
            return
        st.unnamed = 0
        with self._quiet(), self._register_lock:
            st.name = known.name
            announced = st not in self._announce
        if announced:
            self.emit_event(wire.THREAD_LABEL, st.number, st.name)

    def _new_thread(self, ident: int, native_id: int, name: str = "") -> _Thread:
        slot = 0
        while slot in self._slots:
            slot += 1
        self._slots.add(slot)
        st = _Thread(self._next_number, slot, ident, native_id, name or f"thread-{self._next_number}")
        st.unnamed = 0 if name else NAME_TRIES
        self._next_number += 1
        self._threads[st.number] = st
        self._by_ident[ident] = st
        self.new.append((st.number, ident, native_id, st.name))
        self._announce.append(st)
        return st

    def thread_number(self, ident: int, native_id: int = 0, name: str = "") -> int:
        """The lpm number of the thread with ``threading`` ident ``ident``,
        registering it if it has emitted nothing yet (the sampler asks)."""
        with self._quiet(), self._register_lock:
            st = self._by_ident.get(ident)
            if st is None or st.gone:
                st = self._new_thread(ident, native_id, name)
            return st.number

    def thread_renamed(self, ident: int, name: str) -> None:
        """Thread ``ident`` has a new name, for the status a new reader gets."""
        st = self._by_ident.get(ident)
        if st is not None:
            st.name = name
            st.unnamed = 0

    def take_commands(self) -> list[str]:
        out: list[str] = []
        while self._commands:
            out.append(self._commands.popleft())
        return out

    def thread_exit(self, st: _Thread) -> None:
        """``st``'s thread has ended: queue its buffer, free its slot."""
        with self._quiet(), self._register_lock:
            if st.gone:
                return
            st.gone = True
            self._dropped_gone += st.dropped
            buf = st.buf
            st.buf = None
            if buf is not None:
                self._full.append(buf)
            self._threads.pop(st.number, None)
            if self._by_ident.get(st.ident) is st:
                del self._by_ident[st.ident]
            self._slots.discard(st.slot)
            self._retiring.append(st)
            if st.ident == threading.get_ident():
                self._exited[st.ident] = st.native_id

    def thread_gone(self, ident: int) -> None:
        """The sampler saw thread ``ident`` disappear."""
        st = self._by_ident.get(ident)
        if st is not None:
            self.thread_exit(st)
        self._exited.pop(ident, None)

    def take_new(self) -> list[tuple[int, int, int, str]]:
        """(number, ident, native id, name or "") of threads registered since the last call."""
        with self._quiet(), self._register_lock:
            out, self.new = self.new, []
        return out

    def sequence_points(self) -> list[tuple[int, int]]:
        """(number, next sequence number) of every live thread."""
        return [(st.number, st.seq) for st in list(self._threads.values())]

    # -- the hot path --------------------------------------------------------

    def _emit(self, event: bytes, ts: int, naming: bool = True) -> None:
        """Write one encoded event into the calling thread's buffer.
        ``naming``: an unnamed thread's event looks for its name (the
        tracer's do not: a thread's start-up makes dozens of calls before
        threading lists it)."""
        st: _Thread | None = getattr(self._local, "state", None)
        if st is None or st.gone or (st.unnamed and naming):
            st = self._register()
            if st is None:
                return
        if st.trace_epoch != self.tracer.epoch:
            st.trace_epoch = self.tracer.epoch
            self.tracer.adopt()
        if self._paused:
            return
        seq = st.seq
        st.seq = seq + 1
        buf = st.buf
        loss = b""
        if st.lost:
            loss = _LOSS.pack(wire.PY_DATA_LOSS.ID, ts, st.number, st.lost_first, st.lost, st.lost_bytes)
        need = len(loss) + len(event)
        if buf is None or len(buf.data) + need > self._size:
            if buf is not None:
                st.buf = None
                self._full.append(buf)
            buf = self._take(st, seq) if need <= self._size else None
            if buf is None:
                if not st.lost:
                    st.lost_first = seq
                st.lost += 1
                st.lost_bytes += len(event)
                st.dropped += 1
                return
        if loss:
            buf.data += loss
            st.lost = st.lost_bytes = 0
        buf.data += event
        buf.committed = (len(buf.data), seq + 1, ts)

    def _take(self, st: _Thread, seq: int) -> _Buffer | None:
        try:
            buf = self._free.pop()
        except IndexError:
            return None
        # A buffer that will open with a PyDataLoss record starts at the first
        # lost sequence number: the record accounts for the numbers up to `seq`.
        first = st.lost_first if st.lost else seq
        buf.data.clear()
        buf.thread = st
        buf.flushed = 0
        buf.flushed_seq = first
        buf.committed = (0, first, 0)
        st.buf = buf
        return buf

    def emit(self, type_id: int, payload: bytes, variable: bool) -> None:
        """Any event, already encoded, into the calling thread's buffer."""
        ts = self.now()
        if variable:
            self._emit(_HEAD_LEN.pack(type_id, ts, len(payload)) + payload, ts)
        else:
            self._emit(HEAD.pack(type_id, ts) + payload, ts)

    def message(self, text: str) -> None:
        raw = clip_text(text)
        ts = self.now()
        self._emit(_HEAD_LEN.pack(wire.USER_MESSAGE.ID, ts, len(raw)) + raw, ts)

    def marker(self, name: str) -> None:
        raw = clip_text(name)
        ts = self.now()
        self._emit(_HEAD_LEN.pack(wire.USER_MARKER.ID, ts, len(raw)) + raw, ts)

    def counter(self, name: str, value: float) -> None:
        raw = clip_text(name)
        ts = self.now()
        self._emit(_HEAD_LEN.pack(wire.PY_COUNTER.ID, ts, 8 + len(raw)) + _COUNTER.pack(value) + raw, ts)

    def span_begin(self, name: str) -> int:
        """Open a span; returns its id: the thread number in the high 32 bits."""
        st: _Thread | None = getattr(self._local, "state", None)
        if st is None or st.gone or st.unnamed:
            st = self._register()
            if st is None:
                return 0
        span = (st.number << 32) | (st.seq & 0xFFFFFFFF)
        raw = clip_text(name)
        ts = self.now()
        self._emit(_HEAD_LEN.pack(wire.PY_SPAN_BEGIN.ID, ts, 8 + len(raw)) + _SPAN_BEGIN.pack(span) + raw, ts)
        return span

    def span_end(self, span: int) -> None:
        ts = self.now()
        self._emit(_SPAN_END.pack(wire.PY_SPAN_END.ID, ts, span & 0xFFFFFFFFFFFFFFFF), ts)

    def gc_callback(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` entry: StartGC, then EndGC and PyGcCollection."""
        ts = self.now()
        if phase == "start":
            self._emit(HEAD.pack(wire.START_GC.ID, ts), ts)
        else:
            self._emit(HEAD.pack(wire.END_GC.ID, ts), ts)
            gen = info.get("generation", 0)
            payload = _GC.pack(gen, info.get("collected", 0), info.get("uncollectable", 0))
            self._emit(HEAD.pack(wire.PY_GC_COLLECTION.ID, ts) + payload, ts)

    def stats(self) -> dict[str, int]:
        produced = sum(st.seq for st in list(self._threads.values()))
        return {
            "produced_live_threads": produced,
            "dropped": self._dropped_gone + sum(st.dropped for st in list(self._threads.values())),
            "bytes_written": self.bytes_written,
            "connections": self.connections,
            "threads": len(self._threads),
            "free_buffers": len(self._free),
        }

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    # -- the writer ----------------------------------------------------------

    def start(self) -> None:
        self._writer = threading.Thread(target=self._run, name="lpm-writer", daemon=True)
        self._writer.start()

    def trace(self, mode: str, skip: int) -> None:
        self.tracer.set_mode(mode, frozenset(i for i in (skip, self.writer_ident) if i is not None))

    def trace_stats(self) -> tuple[str, int, int]:
        return self.tracer.mode, self.tracer.numbered, 0

    def new_generation(self, generation: int) -> None:
        self.tracer.gen = generation  # its numbers are declared again from here
        super().new_generation(generation)

    @property
    def writer_ident(self) -> int | None:
        return self._writer.ident if self._writer else None

    def stop(self) -> None:
        """Write what is left and the end marker; stop the writer thread."""
        if self._writer is None:
            return
        self._stopping.set()
        self._writer.join()
        self._writer = None

    def _run(self) -> None:
        delay = BACKOFF[0]
        next_try = 0.0
        interval = self.config.flush_interval
        tick = interval if interval > 0 else 0.010
        while not self._stopping.is_set():
            now = time.monotonic()
            was_connected = self._fd is not None
            if self._fd is None and now >= next_try:
                if self._connect():
                    delay = BACKOFF[0]
                else:
                    next_try = now + delay
                    delay = min(delay * BACKOFF[1], BACKOFF[2])
            if self._read_control() and was_connected and self._fd is not None:
                # A reader that attached while an earlier one held the pipe:
                # after the whole blocks in flight, a fresh header.
                self._pending += self.header
                self._pending += self._status_block()
                if self.on_connect is not None:
                    self.on_connect()
            if self._fd is not None:
                if not self._pending:
                    self._pending += self._collect(partial=interval > 0)
                self._write()
            self._stopping.wait(tick)
        self._finish()

    def _read_control(self) -> bool:
        """Read control lines; queue commands for the monitor.  True when a
        reader said "attach".

        A reader writes "attach" *before* it opens the data FIFO, so when the
        open is what let this iteration connect, the attach is already here
        and is rightly ignored: the connection just sent a header.
        """
        if self._control_fd is None:
            if self.control_path is None:
                return False
            fd = _open_own(self.control_path, os.O_RDONLY)
            if fd is None:
                return False
            self._control_fd = fd
        attached = False
        while True:
            try:
                data = os.read(self._control_fd, 4096)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            lines = (self._control_buf + data).split(b"\n")
            self._control_buf = lines.pop()[-256:]
            for raw in lines:
                line = raw.decode("ascii", "replace").strip()
                if line == "attach":
                    attached = True
                elif line:
                    self._commands.append(line)
        return attached

    def _connect(self) -> bool:
        try:
            fd = _open_own(self.data_path, os.O_WRONLY)
        except OSError as err:
            if err.errno in (errno.ENXIO, errno.ENOENT):
                return False
            raise
        if fd is None:
            return False
        try:
            import fcntl

            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except OSError:
            pass  # not a pipe, or the system limit is lower: the default size works
        self._fd = fd
        self.connections += 1
        self._pending = bytearray(self.header)
        self._pending += self._status_block()
        if self.on_connect is not None:
            self.on_connect()
        return True

    def _write(self) -> bool:
        """Write pending bytes without blocking; False when the reader left."""
        assert self._fd is not None
        while self._pending:
            try:
                n = os.write(self._fd, self._pending)
            except (BlockingIOError, InterruptedError):
                return True
            except BrokenPipeError:
                os.close(self._fd)
                self._fd = None
                self._pending.clear()
                return False
            del self._pending[:n]
            self.bytes_written += n
        return True

    def _collect(self, partial: bool) -> bytes:
        """Blocks for everything queued, and for unwritten parts of live buffers."""
        out = bytearray()
        if self._announce:
            with self._quiet(), self._register_lock:
                fresh, self._announce = self._announce, []
            self._announce_block(out, fresh)
        self._drain_full(out)
        if self._retiring:
            with self._quiet(), self._register_lock:
                ended, self._retiring = self._retiring, []
            self._closing_block(out, ended, stop=True)
        if partial:
            for st in sorted(list(self._threads.values()), key=lambda t: t.slot):
                current = st.buf
                if current is None:
                    continue
                # The thread queued its previous buffer before taking this one,
                # so draining now writes that one first: a thread's blocks stay
                # in order.  If `current` was queued meanwhile, it is written.
                self._drain_full(out)
                if st.buf is current:
                    self._block(out, current)
        return bytes(out)

    def _drain_full(self, out: bytearray) -> None:
        """Blocks for the queued full buffers, in queue order; back to the pool."""
        full = self._full
        while full:
            buf = full.popleft()
            self._block(out, buf)
            buf.thread = None
            self._free.append(buf)

    def _block(self, out: bytearray, buf: _Buffer) -> None:
        # One read of `committed`: the owner may be appending right now.
        end, next_seq, last_ts = buf.committed
        start = buf.flushed
        owner = buf.thread
        if end <= start or owner is None:
            return
        data = buf.data
        first_ts = HEAD.unpack_from(data, start)[1]
        size = BLOCK_OVERHEAD + (end - start)
        out += _MARKER_EVENT.pack(wire.BLOCK_MARKER.ID, first_ts, size, last_ts, owner.slot)
        out += _BLOCK_INFO.pack(wire.PY_BLOCK_INFO.ID, first_ts, owner.number, buf.flushed_seq)
        out += data[start:end]
        buf.flushed = end
        buf.flushed_seq = next_seq

    def _status_block(self) -> bytes:
        """A writer block announcing every thread a new reader should know:
        the live ones and those ended whose closing block is still to come."""
        with self._quiet(), self._register_lock:
            self._announce.clear()
            threads = sorted([*self._threads.values(), *self._retiring], key=lambda t: t.number)
        out = bytearray()
        self._announce_block(out, threads)
        return bytes(out)

    def _announce_block(self, out: bytearray, threads: list[_Thread]) -> None:
        """A writer block: CreateThread, ThreadLabel and PyThreadInfo per thread."""
        if not threads:
            return
        ts = self.now()
        body = bytearray()
        for st in threads:
            label = clip_text(st.name)
            body += _THREAD.pack(wire.CREATE_THREAD.ID, ts, st.number)
            body += _HEAD_LEN.pack(wire.THREAD_LABEL.ID, ts, 4 + len(label)) + _THREAD_ID.pack(st.number) + label
            body += _THREAD_INFO.pack(wire.PY_THREAD_INFO.ID, ts, st.number, st.native_id)
        out += _MARKER_EVENT.pack(wire.BLOCK_MARKER.ID, ts, _MARKER_EVENT.size + len(body), ts, fmt.GLOBAL_CAP)
        out += body

    def _closing_block(self, out: bytearray, threads: list[_Thread], stop: bool) -> None:
        """A global block (cap 0xffff, no PyBlockInfo) the writer makes itself,
        out of no thread's buffer, so the budget can never keep it from the
        reader: per thread, its unreported PyDataLoss, its StopThread when it
        ended, and a PySeqPoint with its final sequence number."""
        if not threads:
            return
        ts = self.now()
        body = bytearray()
        for st in threads:
            if st.lost:
                body += _LOSS.pack(wire.PY_DATA_LOSS.ID, ts, st.number, st.lost_first, st.lost, st.lost_bytes)
                st.lost = st.lost_bytes = 0
            if stop:
                body += _STOP.pack(wire.STOP_THREAD.ID, ts, st.number, wire.THREAD_FINISHED, 0)
            body += _SEQ_POINT.pack(wire.PY_SEQ_POINT.ID, ts, st.number, st.seq)
        out += _MARKER_EVENT.pack(wire.BLOCK_MARKER.ID, ts, _MARKER_EVENT.size + len(body), ts, fmt.GLOBAL_CAP)
        out += body

    def _finish(self) -> None:
        with self._quiet(), self._register_lock:
            for st in sorted(self._threads.values(), key=lambda t: t.slot):
                if st.buf is not None:
                    self._full.append(st.buf)
                    st.buf = None
        if self._fd is None and not self._connect():
            self._close_fds()
            return
        self._pending += self._collect(partial=False)
        final = bytearray()
        self._closing_block(final, sorted(self._threads.values(), key=lambda t: t.slot), stop=False)
        self._pending += final
        self._pending += fmt.DATA_END
        deadline = time.monotonic() + self.config.stop_timeout
        while self._pending and self._fd is not None and time.monotonic() < deadline:
            if self._write() and self._pending:
                time.sleep(0.001)
        self._close_fds()

    def _close_fds(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._control_fd is not None:
            os.close(self._control_fd)
            self._control_fd = None

    def forget_after_fork(self) -> None:
        """In a forked child: close the parent's FIFO descriptors, so the
        parent's reader sees end-of-file when the parent is done, not when
        this child is (the writer thread was not forked)."""
        self._close_fds()

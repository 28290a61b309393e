"""The leech's own thread: stack samples, threads, heap, process state, commands.

One daemon thread, ``lpm-monitor``, does everything that is periodic, so the
program's threads only ever pay for the events they emit themselves (user API,
GC callbacks).  Each tick it:

- carries out the commands the sink's writer read from the control FIFO
  (one line each, see :data:`COMMANDS`);
- at the sample rate, takes one stack sample of every thread running Python
  code, unless the sink samples on its own: the native leech's background
  sampler, a pthread that reads the interpreter's frames without the GIL
  (leech.c, "the background sampler"), so that a tick does not stop the
  program at all; else in C when the sink has a sampler (one call walks every
  thread state with the GIL), else with ``sys._current_frames()``.  Each code
  object is declared once per generation (``PyCode``: number, first line,
  qualified name, file) and samples refer to it by number, innermost frame
  first, at most :data:`MAX_DEPTH` frames;
- notices threads that start or are renamed (``CreateThread``,
  ``ThreadLabel``, ``PyThreadInfo``) and tells the sink of threads that ended
  (its writer then sends ``StopThread`` and the final ``PySeqPoint``);
- at the heap interval, emits ``PyHeap`` (RSS, allocated blocks, tracemalloc
  when it is tracing) and each thread's CPU time (``PyThreadCpu``);
- every generation interval, or when a reader arrives or asks: a new
  generation (``PyGeneration``), the process info and settings, every live
  thread's status and a ``PySeqPoint`` per thread; the code table starts empty
  again, so a reader that lost data or joined late can decode every sample
  that follows.

Sampling with the GIL stops the program at every tick: the handover of the
GIL and back costs more than the walk (thread wake-ups on the critical path,
about 2% of wall time at 100 Hz on 2 vCPUs), its rate is bounded by the
switch interval, and a long C call that holds the GIL hides the program from
it.  The background sampler has none of this, the way py-spy reads from
outside; it needs process_vm_readv() on the process's own memory, which
needs no privilege, and ``sampler="gil"`` or a kernel that refuses it falls
back to the GIL walk (bench/overhead.py's lpm-gil variant compares them).
"""

from __future__ import annotations

import sys
import threading
import time
from types import CodeType, FrameType

import _tracemalloc  # the builtin half of tracemalloc: no import cost
from . import procinfo, wire
from ..errors import LeechError
from .config import TRACE_MODES
from .sink import Sink

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    from .tasks import TaskWatch

#: Deepest stack a sample records; deeper stacks keep their innermost frames.
MAX_DEPTH = 512
#: Most code objects in one generation's table before a new generation starts.
MAX_CODES = 50_000
#: Seconds between scans for renamed and ended threads (new ones are also
#: found by the sampler as it meets them).
THREAD_SCAN = 0.1

COMMANDS = ("pause", "resume", "resend", "rate HZ", "heap-interval SECONDS", "trace on|off", "alloc on|off",
            "asyncio on|off")


def next_tick(due: float, period: float, now: float) -> float:
    """When a periodic task runs next: a period after it was due, so its rate
    holds however long the monitor waited for the GIL to run it (with the
    program's threads busy in Python that wait is most of a scan: counting
    from when it ran, 0.1 s heap figures came every 0.18 s); a period from
    now once it is a whole period late, rather than running again at once to
    catch up.  JFR's periodic events keep their period the same way."""
    due += period
    return due if due > now else now + period


class Monitor:
    """The periodic sources; owns the ``lpm-monitor`` thread."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.config = sink.config
        self.rate = self.config.sample_rate
        self.heap_interval = self.config.heap_interval
        self.generation = 0
        self._ticks = 0
        # Code objects by id(): hashing a code object hashes its constants and
        # names every time (most of a tick's work when it was the key).
        # _code_refs keeps them alive so their ids are not reused.
        self._codes: dict[int, int] = {}
        self._code_refs: list[CodeType] = []
        self._known: dict[int, tuple[int, str]] = {}  # ident -> (number, name)
        self._numbers: dict[int, int] = {}  # ident -> number, or -1 for lpm's own threads: the C sampler's view
        self._sampler = sink.sampler()
        self.background = False  # the sink samples on a thread of its own (see _run)
        self.tracing = "off"  # call tracing: see LeechConfig.trace
        self.allocs = False  # allocation tracking: see LeechConfig.alloc
        # asyncio tracking (LeechConfig.asyncio), made when first turned on:
        # tasks.py and weakref would be objects in every program's heap.
        self.tasks: TaskWatch | None = None
        self._resend = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._own: set[int] = set()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lpm-monitor", daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int | None:
        return self._thread.ident if self._thread is not None else None

    def stop(self) -> None:
        """Stop the thread.  The sink's writer sends the final sequence points."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        self._threads()  # announce threads that came and went since the last tick

    def request_resend(self) -> None:
        """Send the process state again at the next tick (a reader arrived)."""
        self._resend.set()

    def own_thread(self, ident: int | None) -> None:
        """Leave thread ``ident`` (one of lpm's) out of samples and thread lists."""
        if ident is not None:
            self._own.add(ident)
            self._numbers[ident] = -1

    def _run(self) -> None:
        self.own_thread(threading.get_ident())
        sink = self.sink
        sink.thread_number(threading.get_ident(), threading.get_native_id(), threading.current_thread().name)
        next_sample = next_heap = next_scan = time.monotonic()
        next_gen = next_sample + self.config.generation_interval
        # The background sampler shares this thread's buffer: it starts
        # from here, and before the first generation empties its table.
        self.background = self.config.sampler == "auto" and sink.background_sampler(self.rate)
        self._new_generation()
        paused = sink.paused
        try:
            self._loop(next_sample, next_heap, next_scan, next_gen, paused)
        finally:
            if self.tracing != "off":
                self.trace("off")  # before the sink goes: the hooks point into it
            if self.allocs:
                self.alloc(False)  # with the last totals
            if self.tasks is not None and self.tasks.on:
                self.track_tasks(False)
            sink.background_stop()

    def track_tasks(self, on: bool) -> None:
        """asyncio tracking on or off."""
        if self.tasks is None:
            from .tasks import TaskWatch

            self.tasks = TaskWatch(self.sink)
        self.tasks.set(on)
        self.sink.emit_event(wire.PY_SETTING, "lpm.asyncio", "on" if on else "off")

    def alloc(self, on: bool, floor: bool = False) -> None:
        """Allocation tracking on or off (native leech only); ``floor``: the
        wrappers put in, doing nothing (for benchmarks)."""
        if self.allocs and not on:
            self.sink.alloc_stats()  # the totals of what was tracked
        self.sink.alloc(on, self.config.alloc_sample, floor)
        self.allocs = on and not floor
        self.sink.emit_event(wire.PY_SETTING, "lpm.alloc", "floor" if floor else "on" if on else "off")

    def trace(self, mode: str) -> None:
        """Call tracing on, off or floor, in every thread but this one's;
        from the thread that starts the leech (so that it is on before the
        program's next call) or from this one (a command)."""
        self.sink.trace(mode, self.ident or 0)
        self.tracing = mode
        self.sink.emit_event(wire.PY_SETTING, "lpm.trace", mode)

    def _loop(self, next_sample: float, next_heap: float, next_scan: float, next_gen: float, paused: bool) -> None:
        sink = self.sink
        background = self.background
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_scan:
                # Everything but sampling at the scan rate: a sample tick then
                # costs the program one C call (commands, pauses and readers
                # wait at most THREAD_SCAN seconds).
                next_scan = next_tick(next_scan, THREAD_SCAN, now)
                self._read_control()
                paused = sink.paused
                if self._resend.is_set() or (self.config.generation_interval > 0 and now >= next_gen):
                    self._resend.clear()
                    next_gen = now + self.config.generation_interval
                    self._new_generation()
                self._threads()
                if self.heap_interval > 0 and now >= next_heap and not paused:
                    self._heap()
                    next_heap = next_tick(next_heap, self.heap_interval, now)
                if background:
                    stats = sink.background_stats()
                    if stats is not None and stats[1] > MAX_CODES:
                        self._new_generation()
            if background:
                self._stopping.wait(max(0.0, next_scan - time.monotonic()))
                continue
            if self.rate > 0 and now >= next_sample and not paused:
                self._sample()
                next_sample = max(next_sample + 1.0 / self.rate, now)
            wake = next_scan if self.rate <= 0 or paused else min(next_sample, next_scan)
            self._stopping.wait(max(0.0, wake - time.monotonic()))

    # -- control -------------------------------------------------------------

    def _read_control(self) -> None:
        for line in self.sink.take_commands():
            result = self.command(line)
            if result != "ok":
                import logging  # only now: most programs never log here

                logging.getLogger("lpm.leech").warning("control FIFO: %s", result)

    def command(self, line: str) -> str:
        """Carry out one control command; returns "ok" or an error text."""
        word, _, arg = line.partition(" ")
        try:
            if word == "pause":
                self.sink.pause()
            elif word == "resume":
                self.sink.resume()
            elif word == "resend":
                self._resend.set()
            elif word == "rate":
                rate = float(arg)
                if not 0 <= rate <= 10_000:
                    return f"error: rate {arg} is outside 0..10000"
                self.rate = rate
                self.sink.background_rate(rate)
                self.sink.emit_event(wire.PY_SETTING, "lpm.sample_rate", repr(rate))
            elif word == "asyncio":
                if arg not in ("on", "off"):
                    return f"error: asyncio {arg!r} is not on or off"
                self.track_tasks(arg == "on")
            elif word == "alloc":
                if arg not in ("on", "off"):
                    return f"error: alloc {arg!r} is not on or off"
                try:
                    self.alloc(arg == "on")
                except LeechError as err:
                    return f"error: {err}"
            elif word == "trace":
                if arg not in TRACE_MODES:
                    return f"error: trace {arg!r} is not one of {', '.join(TRACE_MODES)}"
                self.trace(arg)
            elif word == "heap-interval":
                interval = float(arg)
                if interval < 0:
                    return f"error: heap interval {arg} is negative"
                self.heap_interval = interval
                self.sink.emit_event(wire.PY_SETTING, "lpm.heap_interval", repr(interval))
            else:
                return f"error: unknown command {word!r}; commands are: {', '.join(COMMANDS)}"
        except ValueError:
            return f"error: {arg!r} is not a number"
        return "ok"

    # -- sources -------------------------------------------------------------

    def _new_generation(self) -> None:
        sink = self.sink
        self.generation += 1
        self._codes.clear()
        self._code_refs.clear()
        sink.new_generation(self.generation)
        for event_class, values in procinfo.process_events(sink, self.rate, self.heap_interval):
            sink.emit_event(event_class, *values)
        for number, seq in sink.sequence_points():
            sink.emit_event(wire.PY_SEQ_POINT, number, seq)

    def _threads(self) -> None:
        """Learn new threads' numbers, announce renames, tell the sink of ends.

        The sink's writer announces new threads (CreateThread, ThreadLabel,
        PyThreadInfo) and ended ones in blocks of its own, outside the budget,
        so a thread's life is never lost to a full budget.
        """
        sink = self.sink
        frames = sys._current_frames()
        live = {t.ident: t for t in threading.enumerate() if t.ident is not None}
        for ident in frames:
            if ident not in self._known and ident not in self._own:
                thread = live.get(ident)
                if thread is not None:
                    sink.thread_number(ident, thread.native_id or 0, thread.name)
                else:
                    sink.thread_number(ident)
        for number, ident, _native_id, name in sink.take_new():
            self._learn(ident, number, name)
        for ident, (number, name) in list(self._known.items()):
            thread = live.get(ident)
            # lpm's own threads too: one whose first event came before
            # threading listed it (a collection in its start-up) has a
            # default name until now.
            if thread is not None and thread.name != name:
                # A new thread may have this ident now (the old one ended
                # since the last scan): it has a number of its own, and
                # the old one keeps its name.
                current = sink.thread_number(ident, thread.native_id or 0, thread.name)
                if current != number:
                    self._learn(ident, current, thread.name)
                    continue
                self._known[ident] = (number, thread.name)
                sink.thread_renamed(ident, thread.name)
                sink.emit_event(wire.THREAD_LABEL, number, thread.name)
            if ident not in frames:
                sink.thread_gone(ident)
                del self._known[ident]
                self._numbers.pop(ident, None)

    def _learn(self, ident: int, number: int, name: str) -> None:
        self._known[ident] = (number, name)
        self._numbers[ident] = -1 if ident in self._own else number

    def _register(self, ident: int) -> int | None:
        """A thread the sampler met before the scan: its number, when it is
        a ``threading.Thread`` already (else the scan will see it)."""
        thread = threading._active.get(ident)  # type: ignore[attr-defined]
        if thread is None:
            return None
        number = self.sink.thread_number(ident, thread.native_id or 0, thread.name)
        self._learn(ident, number, thread.name)
        return number

    @property
    def samples(self) -> int:
        """Sample ticks so far, by whichever thread took them."""
        stats = self.sink.background_stats() if self.background else None
        return self._ticks if stats is None else stats[0]

    def _sample(self) -> None:
        if len(self._codes) > MAX_CODES:
            self._new_generation()
        if self._sampler is not None:
            unknown = self._sampler(self._numbers, self._codes, self._code_refs)
            for ident in unknown or ():
                if ident not in self._own:
                    self._register(ident)  # sampled from the next tick on
        else:
            self._sample_python()
        self._ticks += 1

    def _sample_python(self) -> None:
        """The specification of the C sampler (leech.c, py_sample)."""
        sink = self.sink
        codes = self._codes
        for ident, frame in sys._current_frames().items():
            if ident in self._own:
                continue
            known = self._known.get(ident)
            number = known[0] if known is not None else self._register(ident)
            if number is None:
                continue
            stack: list[int] = []
            f: FrameType | None = frame
            while f is not None and len(stack) < MAX_DEPTH:
                code = f.f_code
                n = codes.get(id(code))
                if n is None:
                    n = len(codes) + 1
                    codes[id(code)] = n
                    self._code_refs.append(code)
                    name = getattr(code, "co_qualname", code.co_name)
                    sink.emit_event(wire.PY_CODE, n, code.co_firstlineno, name, code.co_filename)
                stack.append(n)
                f = f.f_back
            sink.emit_event(wire.PY_SAMPLE, number, tuple(stack))

    def _heap(self) -> None:
        sink = self.sink
        current = peak = 0
        if _tracemalloc.is_tracing():
            current, peak = _tracemalloc.get_traced_memory()
        sink.emit_event(wire.PY_HEAP, procinfo.rss_bytes(), sys.getallocatedblocks(), current, peak)
        if self.allocs:
            sink.alloc_stats()
        if self.tasks is not None and self.tasks.on:
            self.tasks.awaiting()
        natives = {t.ident: t.native_id or 0 for t in threading.enumerate() if t.ident is not None}
        for ident, (number, _name) in list(self._known.items()):
            cpu = procinfo.thread_cpu_ns(natives.get(ident, 0))
            if cpu is not None:
                sink.emit_event(wire.PY_THREAD_CPU, number, cpu)

"""The native leech writes the bytes the pure one writes, and both write what was emitted.

Each scenario is a script of calls on a sink (single thread, threads one after
another or in lockstep, a budget that drops, long and awkward text, spans,
counters, GC callbacks, pause, arbitrary events, bad input).  It runs once on a
PureSink and once on a NativeSink, each writing to its own regular file under a
fixed clock, and:

- the two files must be identical, except for the native thread ids in
  PyThreadInfo, which differ because each run starts its own threads;
- every return value the script saw must be identical;
- each file must decode to what the script emitted: per thread, every event
  at its sequence number, every other sequence number reported lost, the
  final sequence point equal to what the thread produced, and the slots the
  scenario expects.

A regular file counts as a reader that is always there.  The writer only
starts after the calls (or where a script says), and every check of the
stream waits for the writer to be idle first, so what it writes does not
depend on when its thread happens to run.
"""

from __future__ import annotations

import gc
import math
import os
import random
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from lpm import _native
from lpm.errors import LeechError
from lpm.eventlog import EVENT_TYPES, NEED_DATA, EndOfStream, Event, EventLogReader, EventLogWriter, RawEvent, read_events
from lpm.eventlog import events as ev
from lpm.eventlog.accounting import Accounting
from lpm.leech.config import LeechConfig
from lpm.leech.native import NativeSink
from lpm.leech.paths import open_reader
from lpm.leech.config import MAX_TEXT
from lpm.leech.pure import PureSink, clip_text
from lpm.leech.sink import Sink

from ..unit.gen import random_event

try:
    _native.load()
    NATIVE_ERROR = ""
except LeechError as err:
    NATIVE_ERROR = str(err)

pytestmark = pytest.mark.skipif(bool(NATIVE_ERROR), reason=f"the native leech is not built: {NATIVE_ERROR}")

HEADER = EventLogWriter().header()
FIXED = 1_234_567_890
PATIENCE = 20.0

Factory = Callable[[LeechConfig, bytes, str], Sink]
IMPLEMENTATIONS: dict[str, Factory] = {"python": PureSink, "native": NativeSink}


def config(**changes: Any) -> LeechConfig:
    settings: dict[str, Any] = dict(
        fixed_clock=FIXED,
        flush_interval=0,
        generation_interval=0,
        sample_rate=0,
        heap_interval=0,
        budget=1 << 20,
        buffer_size=4096,
    )
    settings.update(changes)
    return LeechConfig(**settings)


def text(s: str) -> str:
    """What a reader decodes from text the leech clipped."""
    return clip_text(s).decode("utf-8", "surrogateescape")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def backlog(sink: Sink) -> int:
    """What the writer has yet to put in the stream: queued buffers, new
    threads to announce, ended threads to close."""
    if isinstance(sink, NativeSink):
        return sink.backlog()
    assert isinstance(sink, PureSink)
    return len(sink._full) + len(sink._retiring) + len(sink._announce)


# -- scripts ------------------------------------------------------------------


class Script:
    """Calls a sink, and writes down per thread every event each call produces
    (written or dropped: each takes a sequence number) and every value it returns."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.expected: dict[str, list[Event]] = {}
        self.log: list[object] = []
        self.slots: dict[str, int] = {}
        self.after_stop: list[Callable[[], None]] = []
        self.paused = False
        self.started = False

    def _produce(self, *events: Event) -> None:
        produced = self.expected.setdefault(threading.current_thread().name, [])
        if not self.paused:
            produced.extend(events)

    # The sink's methods, each with the events it produces.

    def marker(self, name: str) -> None:
        self.sink.marker(name)
        self._produce(ev.UserMarker(FIXED, None, text(name)))

    def message(self, message: str) -> None:
        self.sink.message(message)
        self._produce(ev.UserMessage(FIXED, None, text(message)))

    def counter(self, name: str, value: float) -> None:
        self.sink.counter(name, value)
        self._produce(ev.PyCounter(FIXED, None, float(value), text(name)))

    def span_begin(self, name: str) -> int:
        span = self.sink.span_begin(name)
        self.log.append(("span", span))
        self._produce(ev.PySpanBegin(FIXED, None, span, text(name)))
        return span

    def span_end(self, span: int) -> None:
        self.sink.span_end(span)
        self._produce(ev.PySpanEnd(FIXED, None, span & 0xFFFFFFFFFFFFFFFF))

    def gc(self, phase: str, info: dict[str, int]) -> None:
        self.sink.gc_callback(phase, info)
        if phase == "start":
            self._produce(ev.StartGC(FIXED, None))
        else:
            values = (info.get("generation", 0), info.get("collected", 0), info.get("uncollectable", 0))
            self._produce(ev.EndGC(FIXED, None), ev.PyGcCollection(FIXED, None, *values))

    def emit(self, event: Event) -> None:
        self.sink.emit(event.ID, event.LAYOUT.encode(event.payload()), event.VARIABLE)
        self._produce(type(event)(FIXED, None, *event.payload()))

    def pause(self) -> None:
        self.sink.pause()
        self.paused = True
        self.log.append(("paused", self.sink.paused))

    def resume(self) -> None:
        self.sink.resume()
        self.paused = False
        self.log.append(("paused", self.sink.paused))

    def raises(self, call: Callable[[], object]) -> None:
        """Bad input: both sinks refuse it, and emit nothing for it."""
        try:
            call()
        except Exception as err:  # noqa: BLE001 - the types may differ; that both refuse is the point
            self.log.append(("refused", isinstance(err, UnicodeEncodeError)))
        else:
            self.log.append(("accepted",))

    # Threads.

    def thread(self, name: str, body: Callable[[], None], slot: int | None = None) -> None:
        """Run ``body`` in a new thread called ``name``, to its end."""
        failures: list[BaseException] = []

        def run() -> None:
            try:
                body()
            except BaseException as err:  # noqa: BLE001 - reported by the caller
                failures.append(err)

        t = threading.Thread(target=run, name=name)
        t.start()
        t.join()
        if failures:
            raise failures[0]
        if slot is not None:
            self.slots[name] = slot

    # The writer.

    def start(self) -> None:
        if not self.started:
            self.sink.start()
            self.started = True

    def drain(self) -> None:
        """Start the writer and wait until it has taken every queued buffer."""
        self.start()
        buffers = self.sink.config.buffers
        wait_for(lambda: backlog(self.sink) == 0 and self.sink.stats()["free_buffers"] == buffers, "a drained pool")

    def settle(self) -> None:
        self.start()
        wait_for(lambda: backlog(self.sink) == 0, "the writer to take the backlog")


@dataclass
class Run:
    data: bytes
    script: Script


def run(factory: Factory, scenario: Scenario, path: Path) -> Run:
    path.write_bytes(b"")
    sink = factory(scenario.config, HEADER, str(path))
    script = Script(sink)
    try:
        scenario.script(script)
        script.settle()
    finally:
        sink.stop()
        for then in script.after_stop:
            then()
    script.log.append(("stats", sink.stats()))
    script.log.append(("new", [(number, name) for number, _ident, _native_id, name in sink.take_new()]))
    script.log.append(("sequence points", sink.sequence_points()))
    return Run(path.read_bytes(), script)


# -- reading the stream back ----------------------------------------------------


def without_native_ids(data: bytes) -> bytes:
    """The stream with every PyThreadInfo's native thread id zeroed."""
    reader = EventLogReader()
    reader.feed(data)
    reader.close()
    out = bytearray(data)
    while True:
        item = reader.next_raw()
        if item is NEED_DATA or isinstance(item, EndOfStream):
            return bytes(out)
        if isinstance(item, RawEvent) and item.type_id == ev.PyThreadInfo.ID:
            end = item.offset + len(item.raw)
            out[end - 8 : end] = bytes(8)


def first_difference(a: bytes, b: bytes) -> str:
    """The first event at which two streams differ, for the failure message."""
    ra, rb = EventLogReader(), EventLogReader()
    for reader, data in ((ra, a), (rb, b)):
        reader.feed(data)
        reader.close()
    while True:
        x, y = ra.next_raw(), rb.next_raw()
        if x != y:
            return f"python: {x!r}\nnative: {y!r}"
        if x is NEED_DATA or isinstance(x, EndOfStream):
            return f"streams differ outside events ({len(a)} and {len(b)} bytes)"


def normal(event: Event) -> tuple[object, ...]:
    """An event's type and payload, floats by their bits (NaN equals itself), cap left out."""
    values = tuple(struct.pack(">d", v) if isinstance(v, float) else v for v in event.payload())
    return (type(event).__name__, values)


@dataclass
class Decoded:
    """One stream, per thread number."""

    names: dict[int, str] = field(default_factory=dict)
    received: dict[int, dict[int, Event]] = field(default_factory=dict)
    lost: dict[int, list[range]] = field(default_factory=dict)
    produced: dict[int, int] = field(default_factory=dict)
    stopped: set[int] = field(default_factory=set)
    accounting: Accounting = field(default_factory=Accounting)


def decode(data: bytes) -> Decoded:
    items = read_events(data)
    end = items[-1]
    assert isinstance(end, EndOfStream) and end.complete, "the stream ends with its end marker"
    out = Decoded()
    owner: int | None = None  # the thread whose block this is; None in the writer's own blocks
    seq = 0
    for item in items:
        if not isinstance(item, Event):
            continue
        out.accounting.add(item)
        if isinstance(item, ev.EventBlock):
            owner = None
            continue
        if isinstance(item, ev.PyBlockInfo):
            owner, seq = item.thread, item.first_seq
            continue
        if isinstance(item, ev.PyDataLoss):
            out.lost.setdefault(item.thread, []).append(range(item.first_seq, item.first_seq + item.count))
            if owner == item.thread:
                seq = item.first_seq + item.count
            continue
        if owner is not None:
            got = out.received.setdefault(owner, {})
            assert seq not in got, f"thread {owner} has two events with sequence number {seq}"
            got[seq] = item
            seq += 1
        elif isinstance(item, ev.ThreadLabel):
            out.names[item.thread] = item.label
        elif isinstance(item, ev.PySeqPoint):
            out.produced[item.thread] = max(item.seq, out.produced.get(item.thread, 0))
        elif isinstance(item, ev.StopThread):
            out.stopped.add(item.thread)
    return out


def check_stream(script: Script, data: bytes) -> Decoded:
    """Everything the script emitted is in the stream, received or reported lost."""
    decoded = decode(data)
    numbers = {name: number for number, name in decoded.names.items()}
    assert len(numbers) == len(decoded.names), f"two threads share a name: {decoded.names}"
    for name, expected in script.expected.items():
        assert name in numbers, f"thread {name!r} was never announced"
        number = numbers[name]
        received = decoded.received.get(number, {})
        for seq, got in received.items():
            assert seq < len(expected), f"{name}: an event numbered {seq}, but only {len(expected)} were emitted"
            assert normal(got) == normal(expected[seq]), f"{name} #{seq}"
        lost = [s for r in decoded.lost.get(number, []) for s in r]
        assert sorted([*received, *lost]) == list(range(len(expected))), f"{name}: events neither received nor lost"
        assert decoded.produced.get(number) == len(expected), f"{name}: final sequence point"
        if name in script.slots:
            caps = {got.cap for got in received.values()}
            assert caps <= {script.slots[name]}, f"{name} wrote in slots {caps}"
    for number, account in decoded.accounting.threads.items():
        assert account.balanced, f"thread {number}: {account}"
    return decoded


# -- scenarios ------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    script: Callable[[Script], None]
    config: LeechConfig = field(default_factory=config)
    check: Callable[[Decoded, Script], None] | None = None


def single_thread(s: Script) -> None:
    for i in range(700):  # several full buffers
        s.marker(f"marker {i}")
        if i % 7 == 0:
            s.message(f"message {i}: naïve café ✓ 🐍")
    s.slots[threading.current_thread().name] = 0


def sequential_threads(s: Script) -> None:
    s.marker("main first")

    def work(n: int) -> Callable[[], None]:
        def body() -> None:
            for i in range(300 * n):
                s.marker(f"worker {n} says {i}")
            s.counter("worker", n)

        return body

    # The main thread holds slot 0; each worker in turn gets slot 1 back.
    for n in range(1, 4):
        s.thread(f"worker-{n}", work(n), slot=1)
    s.log.append(("number", s.sink.thread_number(0xABCDEF, 4242, "sampled-only")))
    s.log.append(("number again", s.sink.thread_number(0xABCDEF, 4242, "ignored")))
    s.sink.thread_renamed(0xABCDEF, "renamed")
    s.thread("worker-4", work(1), slot=2)  # slot 1 is the sampled thread's now
    s.sink.thread_gone(0xABCDEF)
    s.thread("worker-5", work(1), slot=1)
    s.log.append(("unnamed", s.sink.thread_number(0x123456)))  # slot 1
    # Alive at stop(), in slots out of number order: the final buffers and
    # sequence points go in slot order.
    first, second = Holder(s, "holder-a", 3), Holder(s, "holder-b", 3)  # slots 2, 3
    first.finish()
    s.settle()  # starts the writer
    third = Holder(s, "holder-c", 3)  # slot 2 again
    s.after_stop += [second.finish, third.finish]
    s.marker("main last")
    s.slots.update({threading.current_thread().name: 0, "holder-a": 2, "holder-b": 3, "holder-c": 2})
    s.expected["renamed"] = []
    s.expected["thread-8"] = []  # the default name of thread number 8


def lockstep_threads(s: Script) -> None:
    """Three threads taking turns, each turn a burst that may fill buffers."""
    turns = [threading.Event() for _ in range(3)]
    done = threading.Event()
    stop = [False]

    def body(k: int) -> Callable[[], None]:
        def loop() -> None:
            turn = 0
            while True:
                turns[k].wait()
                turns[k].clear()
                if stop[0]:
                    return
                for i in range(97 * (k + 1)):
                    s.marker(f"lockstep {k} turn {turn} event {i}")
                if turn % 2:
                    span = s.span_begin(f"span of {k}")
                    s.span_end(span)
                turn += 1
                done.set()

        return loop

    threads = [threading.Thread(target=body(k), name=f"lockstep-{k}") for k in range(3)]
    for t in threads:
        t.start()
    for turn in range(12):
        for k in (0, 2, 1):
            done.clear()
            turns[k].set()
            assert done.wait(PATIENCE)
    stop[0] = True
    for k, t in enumerate(threads):  # one by one, so they end in a known order
        turns[k].set()
        t.join()


class Holder:
    """A thread that emits ``markers`` markers, then waits until released.
    Once the writer runs, each holder is announced on its own (the script
    settles), so that how announcements group does not depend on timing."""

    def __init__(self, s: Script, name: str, markers: int) -> None:
        self.release = threading.Event()
        ready = threading.Event()

        def body() -> None:
            for i in range(markers):
                s.marker(f"{name} {i}")
            ready.set()
            self.release.wait()

        self.thread = threading.Thread(target=body, name=name)
        self.thread.start()
        assert ready.wait(PATIENCE)
        if s.started:
            s.settle()

    def finish(self) -> None:
        self.release.set()
        self.thread.join()


def tiny_budget(s: Script) -> None:
    """Drops while the writer is running are kept independent of its timing: the
    pool is emptied by threads holding their current buffers, which the writer
    cannot take back (flush_interval is 0)."""
    for i in range(600):  # two 4 KiB buffers hold 480 of these 17-byte markers
        s.marker(f"m{i:04}")

    def doomed() -> None:
        for i in range(3):
            s.marker(f"doomed {i}")

    s.thread("doomed", doomed)
    s.drain()  # the doomed thread's loss comes in its closing block
    holders = [Holder(s, f"holder-{k}", 1) for k in range(2)]  # the whole pool
    starved = Holder(s, "starved", 2)  # dropped, and alive until after stop()
    for i in range(5):
        s.marker(f"starving {i}")  # dropped too
    for holder in holders:  # one at a time, so each closing block is its own
        holder.finish()
        s.settle()
    s.drain()
    s.marker("recovered")  # its buffer opens with the PyDataLoss of 125 events
    s.after_stop.append(starved.finish)
    s.slots.update({"holder-0": 1, "holder-1": 2, "starved": 3, threading.current_thread().name: 0})


def check_tiny_budget(decoded: Decoded, s: Script) -> None:
    numbers = {name: number for number, name in decoded.names.items()}
    main = numbers[threading.current_thread().name]
    assert decoded.lost[main] == [range(480, 605)]
    assert decoded.lost[numbers["doomed"]] == [range(0, 3)] and numbers["doomed"] in decoded.stopped
    assert decoded.lost[numbers["starved"]] == [range(0, 2)] and numbers["starved"] not in decoded.stopped
    assert s.sink.stats()["dropped"] == 130 == sum(len(r) for rs in decoded.lost.values() for r in rs)


AWKWARD = [
    "",
    "a" * MAX_TEXT,
    "a" * (MAX_TEXT + 1),
    "a" * (MAX_TEXT - 1) + "é",  # 2-byte character across the cut
    "a" * (MAX_TEXT - 2) + "€x",  # 3-byte character across the cut
    "a" * (MAX_TEXT - 3) + "🐍🐍",  # 4-byte character across the cut
    "a" * (MAX_TEXT - 1) + "\udc80\udc80",  # escaped bytes that look like continuation bytes
    "a" * (MAX_TEXT - 1) + "\udcc3\udca9",  # an escaped lead byte at the cut
    "a" * (MAX_TEXT - 1) + "\udcbf\udcbf",  # the last byte that looks like a continuation
    "a" * (MAX_TEXT - 1) + "\udcc0\udcc0",  # the first that does not
    "\udc80" * (MAX_TEXT + 5),  # nothing but continuation-looking bytes: cut to nothing
    "é" * 3000,  # latin-1 storage
    "€" * 2000,  # two-byte storage
    "🐍" * 1100,  # four-byte storage
    "\udcff tail",
    "mixed é € 🐍 \udcfe " * 300,
]


def awkward_text(s: Script) -> None:
    for t in AWKWARD:
        s.marker(t)
        s.message(t)
        s.counter(t, 1.0)
        s.span_end(s.span_begin(t))


def spans_counters_gc(s: Script) -> None:
    outer = s.span_begin("outer")
    inner = s.span_begin("inner")
    for value in (0.0, -0.0, 1.5, -1e300, 1e-320, math.inf, -math.inf, math.nan, 7, True, 2**53 + 1):
        s.counter("value", value)
    s.span_end(inner)
    s.span_end(outer)
    s.span_end(-1)  # masked to 64 bits, as pure.py does
    s.span_end(1 << 70)
    s.gc("start", {"generation": 0})
    s.gc("stop", {"generation": 2, "collected": 12345, "uncollectable": 6})
    s.gc("start", {})
    s.gc("stop", {})  # every field defaults to 0
    s.gc("stop", {"generation": 1, "collected": (1 << 64) - 1, "uncollectable": 0, "duration": 3})
    s.thread("spanner", lambda: s.span_end(s.span_begin("in a thread")))


def pause_resume(s: Script) -> None:
    s.marker("before")
    s.pause()
    s.marker("while paused")  # skipped: no sequence number
    s.span_begin("paused span")  # still returns an id
    s.thread("registered-while-paused", lambda: s.marker("skipped"))
    s.resume()
    s.marker("after")
    span = s.span_begin("after pause")
    s.span_end(span)


def arbitrary_events(s: Script) -> None:
    rnd = random.Random(1234)
    # The writer's business, and sequence points, which a reader's accounts take at their word.
    own = (ev.EventBlock, ev.PyBlockInfo, ev.PyDataLoss, ev.PySeqPoint)
    classes = sorted((c for c in EVENT_TYPES.values() if c not in own), key=lambda c: c.ID)
    for _ in range(4):
        for cls in classes:
            s.emit(random_event(cls, rnd, FIXED, None))
    s.sink.emit(ev.UserMarker.ID, bytearray(b"from a bytearray"), True)  # type: ignore[arg-type]
    s._produce(ev.UserMarker(FIXED, None, "from a bytearray"))
    s.sink.emit(ev.UserMarker.ID, memoryview(b"from a memoryview"), True)  # type: ignore[arg-type]
    s._produce(ev.UserMarker(FIXED, None, "from a memoryview"))
    s.emit(ev.UserBinaryMessage(FIXED, None, bytes(range(256)) * 20))  # larger than a buffer: dropped
    # Fits a buffer alone, not after the PyDataLoss record it must follow: dropped too.
    s.emit(ev.UserBinaryMessage(FIXED, None, bytes(4096 - 12 - 20)))
    s.marker("after the big ones")  # preceded by the PyDataLoss of both


def bad_input(s: Script) -> None:
    s.marker("good")
    s.raises(lambda: s.sink.marker("\ud800 lone high surrogate"))
    s.raises(lambda: s.sink.message("é" * MAX_TEXT + "\udfff"))  # unencodable past the cut
    s.raises(lambda: s.sink.counter("\udd00", 1.0))  # beyond what surrogateescape takes
    s.raises(lambda: s.sink.message(b"bytes"))  # type: ignore[arg-type]
    s.raises(lambda: s.sink.counter("c", "not a number"))  # type: ignore[arg-type]
    s.raises(lambda: s.sink.emit(70000, b"", False))
    s.raises(lambda: s.sink.emit(ev.UserMarker.ID, bytes(70000), True))
    s.raises(lambda: s.sink.gc_callback("stop", {"generation": 70000}))  # EndGC is emitted first
    s._produce(ev.EndGC(FIXED, None))

    def late() -> None:
        s.raises(lambda: s.sink.span_begin("\udbff"))  # registers the thread, then refuses the name
        s.marker("late")

    s.thread("late", late)
    s.marker("still good")


SCENARIOS = [
    Scenario("single thread", single_thread),
    Scenario("threads one after another", sequential_threads),
    Scenario("threads in lockstep", lockstep_threads),
    Scenario("tiny budget", tiny_budget, config(budget=8192, buffer_size=4096), check_tiny_budget),
    Scenario("awkward text", awkward_text, config(buffer_size=64 << 10)),
    Scenario("spans, counters and gc", spans_counters_gc),
    Scenario("pause and resume", pause_resume),
    Scenario("arbitrary events", arbitrary_events),
    Scenario("bad input", bad_input),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_native_writes_the_bytes_pure_writes(scenario: Scenario, tmp_path: Path) -> None:
    runs = {name: run(factory, scenario, tmp_path / f"{name}.eventlog") for name, factory in IMPLEMENTATIONS.items()}
    pure, native = runs["python"], runs["native"]
    assert native.script.log == pure.script.log
    a, b = without_native_ids(pure.data), without_native_ids(native.data)
    assert a == b, first_difference(a, b)
    for result in runs.values():
        decoded = check_stream(result.script, result.data)
        if scenario.check is not None:
            scenario.check(decoded, result.script)


# -- the live path ----------------------------------------------------------------


class FifoReader(threading.Thread):
    """Reads a FIFO to its end, slowly enough that a small budget overflows."""

    def __init__(self, path: Path, pause: float) -> None:
        super().__init__(name="test-reader", daemon=True)
        self.path = path
        self.pause = pause
        self.data = bytearray()

    def run(self) -> None:
        fd = open_reader(str(self.path))
        try:
            while True:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return
                self.data += chunk
                time.sleep(self.pause)
        finally:
            os.close(fd)


@pytest.mark.parametrize("implementation", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("pause", [0.0, 0.0005], ids=["fast reader", "slow reader"])
def test_live_fifo_many_threads(implementation: str, pause: float, tmp_path: Path) -> None:
    fifo = tmp_path / "data"
    os.mkfifo(fifo)
    cfg = config(fixed_clock=None, flush_interval=0.002, budget=32 << 10, buffer_size=4096, stop_timeout=60)
    sink = IMPLEMENTATIONS[implementation](cfg, HEADER, str(fifo))
    sink.start()
    reader = FifoReader(fifo, pause)
    reader.start()
    workers, markers = 6, 4000

    def flood(k: int) -> None:
        for n in range(markers):
            sink.marker(f"w{k} {n}")

    threads = [threading.Thread(target=flood, args=(k,), name=f"flood-{k}") for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.stop()
    reader.join(PATIENCE)
    assert not reader.is_alive()

    decoded = decode(bytes(reader.data))
    numbers = {name: number for number, name in decoded.names.items()}
    total_lost = 0
    for k in range(workers):
        number = numbers[f"flood-{k}"]
        received = decoded.received.get(number, {})
        lost = sorted(s for r in decoded.lost.get(number, []) for s in r)
        assert all(getattr(e, "marker", None) == f"w{k} {seq}" for seq, e in received.items())
        assert sorted([*received, *lost]) == list(range(markers)), "received + reported lost == produced"
        assert decoded.produced[number] == markers and number in decoded.stopped
        total_lost += len(lost)
    if implementation == "native":
        # PureSink's shared `dropped += 1` can lose updates where CPython 3.9
        # switches threads mid-statement; the per-thread counts above cannot.
        assert total_lost == sink.stats()["dropped"]
    # Not Accounting.balanced: with partial flushes a thread's blocks can come
    # out of order (a buffer queued between the writer's full-buffer and
    # partial steps has its tail written after the next buffer's head), which
    # it counts as gaps; the checks above do not depend on the order.


def test_stop_lets_other_threads_run_while_it_waits(tmp_path: Path) -> None:
    """A reader that takes nothing holds stop() for stop_timeout; the GIL is free meanwhile."""
    fifo = tmp_path / "data"
    os.mkfifo(fifo)
    stuck = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    try:
        sink = NativeSink(config(fixed_clock=None, stop_timeout=0.5, budget=4 << 20), HEADER, str(fifo))
        sink.start()
        wait_for(lambda: sink.stats()["connections"] == 1, "the writer to find the reader")
        for i in range(100_000):  # far more than the pipe holds
            sink.marker(f"filler {i}")
        ticks = [0]
        stopping = threading.Event()

        def spin() -> None:
            while not stopping.is_set():
                ticks[0] += 1
                time.sleep(0.001)

        spinner = threading.Thread(target=spin)
        spinner.start()
        time.sleep(0.05)
        before = ticks[0]
        began = time.monotonic()
        sink.stop()
        waited = time.monotonic() - began
        during = ticks[0] - before
        stopping.set()
        spinner.join()
        assert 0.4 < waited < 5.0, waited
        assert during > 50, "another Python thread ran while stop() waited"
    finally:
        os.close(stuck)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with the writer pthread running
def test_a_forked_child_leaves_its_parents_sink_alone(tmp_path: Path) -> None:
    parent_path, child_path = tmp_path / "parent.eventlog", tmp_path / "child.eventlog"
    parent_path.write_bytes(b"")
    child_path.write_bytes(b"")
    sink = NativeSink(config(), HEADER, str(parent_path))
    sink.start()
    sink.marker("parent before fork")
    pid = os.fork()
    if pid == 0:  # the child: only this thread, and a copy of the parent's sink without its writer
        code = 1
        try:
            sink.marker("ignored: the parent's sink")
            sink.stop()  # nothing to stop here
            own = NativeSink(config(), HEADER, str(child_path))
            own.start()
            own.marker("child")
            own.stop()
            code = 0
        finally:
            os._exit(code)
    sink.marker("parent after fork")
    _, status = os.waitpid(pid, 0)
    sink.stop()
    assert os.waitstatus_to_exitcode(status) == 0
    markers = {
        "parent": [e.marker for e in read_events(parent_path.read_bytes()) if isinstance(e, ev.UserMarker)],
        "child": [e.marker for e in read_events(child_path.read_bytes()) if isinstance(e, ev.UserMarker)],
    }
    assert markers == {"parent": ["parent before fork", "parent after fork"], "child": ["child"]}


@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("attempt", range(3))
def test_a_collection_during_registration_registers_the_thread_once(tmp_path: Path, name: str, attempt: int) -> None:
    """Registering a thread calls Python (for its name); a collection there runs
    the GC callback, which emits from the thread being registered.  (A sink that
    held its registration lock across that call would hang.)  In the pure sink
    a collection during a thread's first threading.local access once replaced
    the thread's dict and so fired its exit watch: the thread was registered
    twice, depending on timing, hence the attempts."""
    path = tmp_path / "gc.eventlog"
    path.write_bytes(b"")
    sink = IMPLEMENTATIONS[name](config(), HEADER, str(path))
    gc.callbacks.append(sink.gc_callback)
    thresholds = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        threads = [threading.Thread(target=sink.marker, args=(f"from {i}",), name=f"gc-{i}") for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(PATIENCE)
            assert not t.is_alive(), "a thread hung registering"
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.remove(sink.gc_callback)
    sink.start()
    sink.stop()
    # A thread whose first event comes from a collection early in its bootstrap
    # is not in threading's table yet, and is named like a foreign thread
    # ("Dummy-N"), so the threads are told apart by their markers.
    decoded = decode(path.read_bytes())
    markers = {
        number: [e.marker for e in events.values() if isinstance(e, ev.UserMarker)]
        for number, events in decoded.received.items()
    }
    assert sorted(m for ms in markers.values() for m in ms) == sorted(f"from {i}" for i in range(100))
    assert all(len(ms) <= 1 for ms in markers.values()), "each thread was registered once"
    assert len(decoded.names) in (100, 101), "the hundred threads, and the main thread if a collection ran there"

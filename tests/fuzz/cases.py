"""Seeded fuzzing of every decoder a peer can reach: generators, mutators, harness.

Shared by the quick suite (``tests/fuzz/test_fuzz.py``) and the long run
(``bench/fuzz.py``), so that a failure the long run finds is replayed by the
same code with the same seed.

Each decoder has a :class:`Fuzzer`: ``generate`` makes one input (usually a
*valid* input mutated a few times, since random bytes rarely get past the
first magic number; sometimes plain random bytes), ``check`` feeds it to the
decoder the way production does (whole, and cut in random pieces) and raises
on anything the decoder does not document, and ``bounds`` checks after every
case that the long-lived decoders the fuzzer keeps (one reader fed every
case, one hub that must still answer) buffer no more than their documented
limit.  :func:`run` times each case (a slow case is a failure; a case that
never returns is interrupted by a ``SIGALRM`` watchdog where one can be
installed) and collects failures, grouped by where they were raised.

Everything random comes from ``random.Random`` seeded per case from
(seed, decoder, case number), so a reported case is reproducible.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

from lpm.errors import FormatError, ProtocolError
from lpm.eventlog import events as ev
from lpm.eventlog import format as fmt
from lpm.eventlog.reader import NEED_DATA, EventLogReader, RawEvent, read_events
from lpm.eventlog.sample import sample_eventlog
from lpm.eventlog.writer import EventLogWriter, EventType
from lpm.protocol import service
from lpm.protocol.frames import HEAD, MAGIC, Frame, FrameDecoder, Kind, encode_frame
from lpm.server import http
from lpm.server.hub import Hub
from lpm.udp import Channel, ClientConnection, Config, Server
from lpm.udp import packet as udp_packet

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"

#: What a reader may hold after it has returned everything it can: one
#: incomplete item, at most an event (``MAX_EVENT``) or one type declaration
#: of a header (its head, description, extra and end tag).
READER_BOUND = max(fmt.MAX_EVENT, fmt.ET_HEAD.size + fmt.MAX_DESCRIPTION + 4 + fmt.MAX_EXTRA + 4)
#: The largest frame a client may send the hub (HubLimits.frame_bytes).
CLIENT_FRAME = 1 << 20


# == mutators ===================================================================

#: Integers that break length and count fields: zero, one, the edges of each
#: width, and huge.
INTERESTING = (0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, (1 << 63) - 1, (1 << 64) - 1)

Mutator = Callable[[random.Random, bytes, Sequence[bytes]], bytes]


def random_bytes(rng: random.Random, most: int = 2048) -> bytes:
    """Uniform random bytes, of a length that favours short inputs."""
    return rng.randbytes(rng.choice([rng.randrange(16), rng.randrange(256), rng.randrange(most + 1)]))


def _pos(rng: random.Random, data: bytes, end: bool = True) -> int:
    return rng.randrange(len(data) + (1 if end else 0)) if data or end else 0


def flip_bits(rng: random.Random, data: bytes, tokens: Sequence[bytes]) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4, 8])):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def set_byte(rng: random.Random, data: bytes, tokens: Sequence[bytes]) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    out[rng.randrange(len(out))] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    return bytes(out)


def truncate(rng: random.Random, data: bytes, tokens: Sequence[bytes]) -> bytes:
    return data[: _pos(rng, data)]


def cut_head(rng: random.Random, data: bytes, tokens: Sequence[bytes]) -> bytes:
    return data[_pos(rng, data) :]


def delete_slice(rng: random.Random, data: bytes, tokens: Sequence[bytes]) -> bytes:
    at = _pos(rng, data)
    return data[:at] + data[at + rng.choice([1, 2, 4, rng.randrange(1, 64)]) :]


def insert_random(rng: random.Random, data: bytes, tokens: Sequence[bytes]) -> bytes:
    at = _pos(rng, data)
    return data[:at] + rng.randbytes(rng.choice([1, 2, 4, rng.randrange(1, 64)])) + data[at:]


def insert_token(rng: random.Random, data: bytes, tokens: Sequence[bytes]) -> bytes:
    if not tokens:
        return insert_random(rng, data, tokens)
    at = _pos(rng, data)
    return data[:at] + rng.choice(tokens) + data[at:]


def overwrite_token(rng: random.Random, data: bytes, tokens: Sequence[bytes]) -> bytes:
    if not tokens:
        return set_byte(rng, data, tokens)
    token = rng.choice(tokens)
    at = _pos(rng, data)
    return data[:at] + token + data[at + len(token) :]


def duplicate_slice(rng: random.Random, data: bytes, tokens: Sequence[bytes]) -> bytes:
    """A slice copied elsewhere: whole events or frames repeated, or halves of them."""
    if not data:
        return data
    start = rng.randrange(len(data))
    piece = data[start : start + rng.choice([2, 8, 16, rng.randrange(1, 512)])]
    at = _pos(rng, data)
    return data[:at] + piece * rng.choice([1, 1, 2, 16]) + data[at:]


def set_integer(rng: random.Random, data: bytes, tokens: Sequence[bytes]) -> bytes:
    """A 1-, 2-, 4- or 8-byte field set to an interesting value, to one off
    its old value, or to the input's length (give or take one): what breaks
    length fields.  Big-endian, like every format here; sometimes little."""
    width = rng.choice([1, 2, 2, 4, 4, 8])
    if len(data) < width:
        return data
    at = rng.randrange(len(data) - width + 1)
    order: Literal["big", "little"] = "big" if rng.random() < 0.9 else "little"
    old = int.from_bytes(data[at : at + width], order)
    mask = (1 << (8 * width)) - 1
    value = rng.choice([
        rng.choice(INTERESTING), old + 1, old - 1, old * 2, len(data) - at, len(data) - at + 1,
        len(data) - at - 1, mask,
    ]) & mask
    return data[:at] + value.to_bytes(width, order) + data[at + width :]


MUTATORS: Tuple[Mutator, ...] = (flip_bits, set_byte, truncate, cut_head, delete_slice, insert_random,
                                 insert_token, overwrite_token, duplicate_slice, set_integer, set_integer)


def mutate(rng: random.Random, data: bytes, tokens: Sequence[bytes] = (), corpus: Sequence[bytes] = ()) -> bytes:
    """``data`` after one to a few mutations; sometimes spliced with another
    valid input of the corpus (a stream that switches mid-item)."""
    if corpus and rng.random() < 0.1:
        other = rng.choice(corpus)
        data = data[: _pos(rng, data)] + other[_pos(rng, other) :]
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 5])):
        data = rng.choice(MUTATORS)(rng, data, tokens)
    return data


def pieces(rng: random.Random, data: bytes) -> List[bytes]:
    """``data`` cut at random offsets, as a socket or a FIFO delivers it:
    sometimes byte by byte (short inputs only), sometimes in big reads."""
    if not data:
        return []  # b"" would mean end of input to a reader
    if len(data) <= 512 and rng.random() < 0.1:
        return [data[i : i + 1] for i in range(len(data))]
    most = max(rng.choice([3, 17, 300, 4096]), len(data) // 2000)  # cutting costs the harness, not lpm
    out: List[bytes] = []
    at = 0
    while at < len(data):
        n = rng.randint(1, most)
        out.append(data[at : at + n])
        at += n
    return out


# == harness ====================================================================


class Hang(BaseException):
    """Raised by the watchdog in a case that does not return.  A BaseException
    so that code catching ``Exception`` (the UDP core does, on purpose)
    cannot swallow it."""


class Unexpected(AssertionError):
    """A decoder broke its contract without raising (a bound, a reply that
    never came, a bug its own catch-all counted)."""


@dataclass
class Failure:
    decoder: str
    seed: int
    case: int
    data: bytes
    error: str  #: the traceback, or what was wrong
    signature: str  #: where: exception type and innermost lpm function

    def describe(self, limit: int = 256) -> str:
        shown = self.data[:limit].hex()
        more = f"... ({len(self.data)} bytes)" if len(self.data) > limit else f" ({len(self.data)} bytes)"
        return f"{self.decoder} seed={self.seed} case={self.case}: {self.signature}\n  input: {shown}{more}\n{self.error}"


@dataclass
class Report:
    decoder: str
    seed: int
    cases: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    failures: List[Failure] = field(default_factory=list)  #: the first of each signature
    by_signature: Dict[str, int] = field(default_factory=dict)
    peak_bytes: Optional[int] = None  #: tracemalloc peak, when tracing

    @property
    def failed(self) -> int:
        return sum(self.by_signature.values())

    def unknown(self) -> List[Failure]:
        """Failures that are not :data:`KNOWN` bugs."""
        return [f for f in self.failures if known_bug(f.signature) is None]


#: Bugs found by fuzzing and not fixed yet, by a fragment of their signature;
#: each has an ``xfail(strict=True)`` reproducer in test_fuzz.py.  The quick
#: suite tolerates these (and only these); bench/fuzz.py reports them.
KNOWN: Dict[str, str] = {}


def known_bug(signature: str) -> Optional[str]:
    for fragment, what in KNOWN.items():
        if fragment in signature:
            return what
    return None


def signature(exc: BaseException) -> str:
    """The exception's type and the innermost lpm function it passed through
    (line numbers left out: they move as lpm is edited)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = "?"
    for fs in reversed(frames):
        path = Path(fs.filename)
        if "lpm" in path.parts and "tests" not in path.parts:
            parts = path.parts
            where = "/".join(parts[parts.index("lpm"):]) + ":" + fs.name
            break
    else:
        if frames:
            where = f"{Path(frames[-1].filename).name}:{frames[-1].name}"
    if isinstance(exc, Unexpected):
        return f"Unexpected: {str(exc).splitlines()[0][:120]}"
    return f"{type(exc).__name__} in {where}"


class Fuzzer:
    """One decoder under fuzz.  Subclasses build their valid corpus once and
    keep their long-lived decoders for the whole run."""

    name = "?"

    def generate(self, rng: random.Random) -> bytes:
        raise NotImplementedError

    def check(self, data: bytes, rng: random.Random) -> None:
        """Feed ``data``; raise on anything the decoder does not document."""
        raise NotImplementedError

    def bounds(self) -> None:
        """After each case: the long-lived decoders are within their limits."""

    def close(self) -> None:
        """Release what the fuzzer holds (sockets)."""


class _Watchdog:
    """SIGALRM after ``limit`` seconds raises :class:`Hang` in the case, when
    this is the main thread of a Unix process; elsewhere a hang is only
    caught by the per-case timing, after it returns."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.active = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        self._old: Any = None

    def _fire(self, signum: int, frame: Optional[FrameType]) -> None:
        raise Hang(f"case still running after {self.limit} s")

    def __enter__(self) -> _Watchdog:
        if self.active:
            self._old = signal.signal(signal.SIGALRM, self._fire)
        return self

    def arm(self) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, self.limit)

    def disarm(self) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)


def case_rng(seed: int, decoder: str, case: int) -> random.Random:
    return random.Random(f"{seed}:{decoder}:{case}")


def run(fuzzer: Fuzzer, seed: int, *, cases: Optional[int] = None, seconds: Optional[float] = None,
        case_limit: float = 1.0, hang_limit: float = 10.0, first: int = 0,
        report: Optional[Report] = None) -> Report:
    """Run ``cases`` cases, or as many as fit in ``seconds``, numbered from
    ``first`` and added to ``report`` (to go on with a run in a second part).

    A case slower than ``case_limit`` seconds is a failure (per-case timing
    with ``perf_counter``); one still running after ``hang_limit`` is
    interrupted.  Failures are grouped by :func:`signature`, the first input
    of each kept.
    """
    if cases is None and seconds is None:
        raise ValueError("give cases or seconds")
    report = report or Report(fuzzer.name, seed)
    started = time.perf_counter()
    deadline = started + seconds if seconds is not None else None
    with _Watchdog(hang_limit) as watchdog:
        i = first
        while (cases is None or i < first + cases) and (deadline is None or time.perf_counter() < deadline):
            rng = case_rng(seed, fuzzer.name, i)
            data = fuzzer.generate(rng)
            t0 = time.perf_counter()
            error: Optional[Tuple[str, str]] = None
            try:
                watchdog.arm()
                try:
                    fuzzer.check(data, rng)
                    fuzzer.bounds()
                finally:
                    watchdog.disarm()
            except (Exception, Hang) as exc:
                error = (signature(exc), traceback.format_exc())
            took = time.perf_counter() - t0
            report.slowest = max(report.slowest, took)
            if error is None and took > case_limit:
                error = (f"Slow: a case over {case_limit} s", f"took {took:.3f} s")
            if error is not None:
                sig, text = error
                if sig not in report.by_signature:
                    report.failures.append(Failure(fuzzer.name, seed, i, data, text, sig))
                report.by_signature[sig] = report.by_signature.get(sig, 0) + 1
            i += 1
        report.cases += i - first
    report.seconds += time.perf_counter() - started
    return report


# == valid inputs ===============================================================

EVENTLOG_TOKENS: Tuple[bytes, ...] = (
    fmt.HEADER_BEGIN, fmt.HET_BEGIN, fmt.ET_BEGIN, fmt.ET_END, fmt.HET_END, fmt.HEADER_END, fmt.DATA_BEGIN,
    fmt.DATA_END, b"\x00\x12", b"\xff\xff", b"\x00\x00", b"\xff\xff\xff\xff",
    fmt.HEADER_BEGIN + fmt.HET_BEGIN, fmt.HET_END + fmt.HEADER_END + fmt.DATA_BEGIN,
)


def _random_events(rng: random.Random, n: int, cap: Optional[int]) -> List[ev.Event]:
    from tests.unit.gen import random_events

    return random_events(rng, n, cap)


def eventlog_corpus(seed: int = 0) -> List[bytes]:
    """Valid eventlogs of many shapes: the sample program's, the golden files
    (one written by GHC), every registered event type with odd values, blocks
    of several capabilities, a restarted stream, a few types only."""
    rng = random.Random(seed)
    out = [sample_eventlog(seed=s, seconds=1) for s in (1, 2)]
    out += [p.read_bytes() for p in sorted(GOLDEN.glob("*.eventlog"))]
    w = EventLogWriter()
    for n in (10, 60, 150):
        out.append(w.eventlog(_random_events(rng, n, None)))
    blocks = [w.header()]
    for cap in (0, 1, fmt.GLOBAL_CAP, 3):
        blocks.append(w.block(cap, _random_events(rng, 25, None if cap == fmt.GLOBAL_CAP else cap)))
    out.append(b"".join(blocks) + w.end())
    out.append(b"".join(blocks))  # no end marker: a live stream
    small = EventLogWriter([EventType.of(c) for c in (ev.CreateThread, ev.UserMarker, ev.UserMessage)]
                           + [EventType(18, 14, "Block marker")])
    tiny = small.header() + small.block(0, [ev.CreateThread(1, 0, 1), ev.UserMarker(2, 0, "héllo")]) + small.end()
    out.append(tiny)
    out.append(tiny[:-2] + b"junk" + tiny)  # restarted without an end marker
    out.append(b"garbage before the header" + tiny)
    return out


def _requests(rng: random.Random) -> List[Dict[str, Any]]:
    """Service requests of every op, with good, odd and wrong arguments."""
    odd: List[Any] = [None, True, -1, 0, 1, 2, 1 << 70, 1.5, float("1e308"), "", "all", "1", [], [1], [1, "x"],
                      {}, {"a": 1}, ["gc", "threads"], ["nope"], [18], [0xFFFF], [True]]
    out: List[Dict[str, Any]] = []
    for i, op in enumerate([*service.OPS, "nope", None, 7]):
        message: Dict[str, Any] = {"type": "request", "id": rng.choice([i, -i, 1 << 40, i]), "op": op}
        if op == "subscribe":
            message["sources"] = rng.choice(["all", [1], [1, 2], [], odd[rng.randrange(len(odd))]])
            message["classes"] = rng.choice([None, ["gc"], list(service.CLASSES), [9, 10], odd[rng.randrange(len(odd))]])
        for name in service.OPS.get(op, ()) if isinstance(op, str) else ():
            if rng.random() < 0.9:
                message[name] = rng.choice([1, 1, 2, rng.choice(odd)]) if name == "source" else rng.choice([10, 0, 10_000, 1e9, rng.choice(odd)])
        out.append(message)
    return out


def service_corpus(seed: int = 0) -> List[bytes]:
    rng = random.Random(seed)
    out = [service.encode(m) for m in _requests(rng)]
    out += [service.reply(3, {"sources": [1, 2]}), service.error(None, "x"), service.error(4, "no source 9"),
            service.notice("dropped", source=1, events=120), service.notice("source-added", source=2, name="n"),
            json.dumps({"type": "request", "id": 1, "op": "sources", "x": "\u00e9\ud83d\udc0d"}).encode()]
    return out


SERVICE_TOKENS: Tuple[bytes, ...] = (b"{", b"}", b"[", b"]", b'"', b",", b":", b"null", b"true", b"1e999", b"-0",
                                     b"NaN", b"Infinity", b'"\\ud800"', b"\\u0000", b'"type"', b'"request"',
                                     b'"id"', b'"op"', b'"source"', b'"sources"', b'"classes"', b'"all"', b"\xff",
                                     b"\xc3", b"[" * 64, b"{\"a\":" * 32, b"9" * 5000)


def _nested(rng: random.Random) -> bytes:
    """Deeply nested JSON (a stack-depth attack), as a request where possible."""
    depth = rng.choice([100, 999, 1000, 5000, 100_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    inner = opener * depth + b"1" + closer * depth
    if rng.random() < 0.5:
        return b'{"type":"request","id":1,"op":"subscribe","classes":' + inner + b"}"
    return inner


def frame_corpus(seed: int = 0) -> List[bytes]:
    """Frames as a client and a server send them, alone and in runs."""
    rng = random.Random(seed)
    data = sample_eventlog(seed=3, seconds=1)
    header_end = data.find(fmt.DATA_BEGIN) + len(fmt.DATA_BEGIN)
    singles = [encode_frame(Frame(Kind.SERVICE, 0, m)) for m in service_corpus(seed)]
    singles += [encode_frame(Frame(Kind.HEADER, 1, data[:header_end])),
                encode_frame(Frame(Kind.EVENTS, 1, data[header_end : header_end + 600])),
                encode_frame(Frame(Kind.STATE, 1, b'{"source":1,"state":{}}')),
                encode_frame(Frame(Kind.SERVICE, 0, b""))]
    out = list(singles)
    for _ in range(12):
        out.append(b"".join(rng.choice(singles) for _ in range(rng.randint(2, 6))))
    return out


FRAME_TOKENS: Tuple[bytes, ...] = (MAGIC, MAGIC + bytes([1, 3, 0, 0]), bytes([0]), bytes([2]), bytes([5]),
                                   b"\xff\xff\xff\xff", b"\x00\x10\x00\x00", b"\x00\x10\x00\x01") + SERVICE_TOKENS[:16]


def http_corpus() -> List[bytes]:
    """Requests as a browser, curl and Prometheus send them, and a few odd ones."""
    targets = ["/", "/app.js", "/app.css", "/api/sources", "/api/state?source=1", "/api/state?source=2",
               "/api/flame?source=1&seconds=10", "/api/flame?source=1&seconds=0", "/metrics", "/api/stream",
               "/api/state", "/api/state?source=x", "/nothing", "/api/flame?source=1&seconds=99999",
               "/%2e%2e/etc/passwd", "/api/state?source=1&source=2", "http://localhost/api/sources"]
    out = []
    for target in targets:
        for method in ("GET", "HEAD"):
            out.append(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.5\r\n"
                       "Accept: */*\r\n\r\n".encode())
    out.append(b"GET /metrics HTTP/1.1\r\nHost: localhost:9090\r\nUser-Agent: Prometheus/2.45\r\n"
               b"Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n"
               b"Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n")
    for op in ("pause", "resume"):
        out.append(f"POST /api/{op}?source=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode())
        out.append(f"POST /api/{op}?source=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   "Content-Length: 13\r\n\r\n{\"why\":\"me\"}\n".encode())
    out.append(b"DELETE /api/sources HTTP/1.0\r\n\r\n")
    return out


HTTP_TOKENS: Tuple[bytes, ...] = (b"\r\n", b"\r\n\r\n", b"\n", b"\r", b" ", b":", b"Content-Length: ",
                                  b"Content-Length: 65537\r\n", b"Content-Length: -1\r\n", b"Transfer-Encoding: chunked\r\n",
                                  b"%", b"%ff", b"%00", b"?", b"&", b"=", b"#", b"[", b"]", b"http://[", b"//[::1",
                                  b"HTTP/1.1", b"HTTP/2", b"GET ", b"POST ", b"\x00", b"\xff", b"9" * 40,
                                  b"source=", b"seconds=", b"/api/", b"\xc3\xa9")


# == the fuzzers ================================================================


def drain_reader(reader: EventLogReader, mode: str) -> None:
    """Take everything the reader has, through one of its four APIs."""
    if mode == "events":
        for _ in reader.events():
            pass
        return
    while True:
        if mode == "count":
            if reader.count({}) is NEED_DATA:
                return
            continue
        if mode == "run":
            run_ = reader.raw_run()
            if run_ is not None:
                for e in run_.events:
                    reader.decode_in(run_, e)
                continue
        item = reader.next_raw()
        if item is NEED_DATA:
            return
        if isinstance(item, RawEvent):
            reader.decode(item)


READER_MODES = ("events", "raw", "count", "run")


class EventLogFuzzer(Fuzzer):
    """``EventLogReader``, strict (only ``FormatError``) or lenient (nothing
    at all), fed whole and in random pieces, through each of its APIs; the
    lenient one also through ``read_events``, and one lenient reader lives for
    the whole run, fed every case back to back as a FIFO that never stops
    writing garbage would, and must stay within :data:`READER_BOUND`."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.name = "eventlog-strict" if strict else "eventlog-lenient"
        self.corpus = eventlog_corpus()
        self.long = EventLogReader(strict=False)

    def generate(self, rng: random.Random) -> bytes:
        if rng.random() < 0.08:
            return random_bytes(rng, 4096)
        return mutate(rng, rng.choice(self.corpus), EVENTLOG_TOKENS, self.corpus)

    def _feed(self, reader: EventLogReader, parts: List[bytes], mode: str) -> None:
        for part in parts:
            reader.feed(part)
            drain_reader(reader, mode)
            if reader.buffered > READER_BOUND:
                raise Unexpected(f"reader buffers {reader.buffered} bytes after draining (bound {READER_BOUND})")
        reader.close()
        drain_reader(reader, mode)

    def check(self, data: bytes, rng: random.Random) -> None:
        for parts in ([data], pieces(rng, data)):
            try:
                self._feed(EventLogReader(strict=self.strict), parts, rng.choice(READER_MODES))
            except FormatError:
                if not self.strict:
                    raise
        if not self.strict:
            read_events(data, strict=False)
            for part in pieces(rng, data):
                self.long.feed(part)
                drain_reader(self.long, rng.choice(READER_MODES))

    def bounds(self) -> None:
        if self.long.buffered > READER_BOUND:
            raise Unexpected(f"long-lived reader buffers {self.long.buffered} bytes (bound {READER_BOUND})")


def _frames_of(data: bytes) -> List[Frame]:
    """The frames the hub wrote; raises if it wrote something that is not one."""
    decoder = FrameDecoder()
    decoder.feed(data)
    out: List[Frame] = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    if decoder.buffered:
        raise Unexpected(f"the hub wrote {decoder.buffered} bytes of a partial frame")
    return out


class _HubScene:
    """A hub with a live source and a well-behaved subscribed client, which
    must keep getting answers whatever else the fuzz does to the hub."""

    def __init__(self) -> None:
        self.control_answer: Optional[str] = None
        self.hub = Hub(control=lambda source, line: self.control_answer)
        source = self.hub.add_source("fuzz", "leech", pid=1)
        assert source is not None
        self.source = source
        self.hub.source_data(source, sample_eventlog(seed=5, seconds=1))
        good = self.hub.add_client("good")
        assert good is not None
        self.good = good
        self._id = 0
        self.ask("subscribe", sources="all")

    def ask(self, op: str, **args: Any) -> Dict[str, Any]:
        """A request from the good client and its reply (events are skipped)."""
        self._id += 1
        self.hub.client_data(self.good, encode_frame(Frame(Kind.SERVICE, 0, service.request(self._id, op, **args))))
        for frame in _frames_of(self.hub.take_output(self.good, limit=1 << 30)):
            if frame.kind is Kind.SERVICE:
                message = service.decode(frame.payload)
                if message.get("id") == self._id:
                    return message
        raise Unexpected(f"the hub did not answer request {self._id} ({op}); good client: {self.good.close_reason}")


class SourceFuzzer(Fuzzer):
    """The server's per-source path: ``Hub.source_data`` fed mutated eventlogs
    in pieces through one long-lived source (sometimes closed and replaced),
    its info and state snapshot serialized as the STATE frame and the web
    view do, and the hub still answering a subscribed client."""

    name = "source"

    def __init__(self) -> None:
        self.corpus = eventlog_corpus(1)
        self.scene = _HubScene()
        self.replaced = 0

    def generate(self, rng: random.Random) -> bytes:
        if rng.random() < 0.08:
            return random_bytes(rng, 4096)
        return mutate(rng, rng.choice(self.corpus), EVENTLOG_TOKENS, self.corpus)

    def check(self, data: bytes, rng: random.Random) -> None:
        scene = self.scene
        hub = scene.hub
        for part in pieces(rng, data):
            hub.source_data(scene.source, part)
        json.dumps(scene.source.info())
        json.dumps(scene.source.state.snapshot())
        if rng.random() < 0.05:
            hub.source_closed(scene.source)
            hub.remove_source(scene.source)
            source = hub.add_source(f"fuzz-{self.replaced}", "fifo")
            assert source is not None
            scene.source = source
            self.replaced += 1
            scene.ask("subscribe", sources="all")
        reply = scene.ask("sources")
        if reply.get("type") != "reply":
            raise Unexpected(f"'sources' answered {reply}")

    def bounds(self) -> None:
        buffered = self.scene.source.reader.buffered
        if buffered > READER_BOUND:
            raise Unexpected(f"the source's reader buffers {buffered} bytes (bound {READER_BOUND})")


class FrameFuzzer(Fuzzer):
    """``FrameDecoder`` (only ``ProtocolError``) fed whole and in pieces, with
    the hub's payload cap: after each piece it holds at most one partial
    frame, never more than the cap and a head."""

    name = "frames"

    def __init__(self) -> None:
        self.corpus = frame_corpus()

    def generate(self, rng: random.Random) -> bytes:
        if rng.random() < 0.08:
            return random_bytes(rng) if rng.random() < 0.5 else MAGIC + random_bytes(rng)
        return mutate(rng, rng.choice(self.corpus), FRAME_TOKENS, self.corpus)

    def check(self, data: bytes, rng: random.Random) -> None:
        for parts in ([data], pieces(rng, data)):
            decoder = FrameDecoder(CLIENT_FRAME)
            try:
                for part in parts:
                    decoder.feed(part)
                    while decoder.next_frame() is not None:
                        pass
                    if decoder.buffered > HEAD.size + CLIENT_FRAME:
                        raise Unexpected(f"frame decoder buffers {decoder.buffered} bytes")
            except ProtocolError:
                pass


class HubClientFuzzer(Fuzzer):
    """``Hub.client_data`` from a new client per case, fed mutated frame
    streams (and well-framed mutated service messages, which reach the
    service code): it never raises, writes only whole frames, a client it
    closes was told why, and the good client still gets its answers."""

    name = "hub-client"

    def __init__(self) -> None:
        self.frames = frame_corpus(2)
        self.messages = service_corpus(2)
        self.scene = _HubScene()

    def generate(self, rng: random.Random) -> bytes:
        r = rng.random()
        if r < 0.45:
            return mutate(rng, rng.choice(self.frames), FRAME_TOKENS, self.frames)
        if r < 0.9:
            payloads = [mutate(rng, rng.choice(self.messages), SERVICE_TOKENS, self.messages)
                        for _ in range(rng.randint(1, 3))]
            return b"".join(encode_frame(Frame(Kind.SERVICE, 0, p)) for p in payloads)
        if r < 0.95:
            return encode_frame(Frame(Kind.SERVICE, 0, _nested(rng)))
        return random_bytes(rng)

    def check(self, data: bytes, rng: random.Random) -> None:
        scene = self.scene
        hub = scene.hub
        scene.control_answer = rng.choice([None, None, "no leech"])
        client = hub.add_client("fuzz")
        assert client is not None
        try:
            for part in pieces(rng, data):
                hub.client_data(client, part)
            frames = _frames_of(hub.take_output(client, limit=1 << 30))
            if client.close_reason is not None:
                last = frames[-1] if frames else None
                if last is None or last.kind is not Kind.SERVICE or service.decode(last.payload)["type"] != "error":
                    raise Unexpected(f"client closed ({client.close_reason}) without an error message")
        finally:
            hub.remove_client(client)
        scene.ask("sources")


class ServiceFuzzer(Fuzzer):
    """``service.decode`` (only ``ProtocolError``), then for requests
    ``parse_request`` (only ``ProtocolError``/``BadRequest``) and the
    subscription's ``class_filter`` (only ``ValueError``), on mutated JSON,
    structured random requests and deeply nested documents."""

    name = "service"

    def __init__(self) -> None:
        self.corpus = service_corpus(3)

    def generate(self, rng: random.Random) -> bytes:
        r = rng.random()
        if r < 0.6:
            return mutate(rng, rng.choice(self.corpus), SERVICE_TOKENS, self.corpus)
        if r < 0.85:
            return service.encode(rng.choice(_requests(rng)))
        if r < 0.9:
            return _nested(rng)
        return random_bytes(rng)

    def check(self, data: bytes, rng: random.Random) -> None:
        try:
            message = service.decode(data)
        except ProtocolError:
            return
        if message["type"] != "request":
            return
        try:
            request = service.parse_request(message)
        except ProtocolError:
            return
        try:
            service.class_filter(request.args.get("classes"))
        except ValueError:
            pass


class HttpFuzzer(Fuzzer):
    """``RequestParser.feed`` (only ``HttpError``) whole and in pieces, with
    the same outcome either way and never more than its limits buffered;
    a parsed request is routed by ``WebListener._handle`` (the listener's
    socket is bound but never used: routing touches only ``conn.out``) and
    must be answered with a status line, never a 500."""

    name = "http"

    def __init__(self) -> None:
        from lpm.server.web import WebListener, _Conn

        self.corpus = http_corpus()
        self.scene = _HubScene()
        self.web = WebListener(self.scene.hub, "127.0.0.1", 0, lambda: {"tcp": 1})
        self._sock = socket.socket()
        self._conn: Callable[[], Any] = lambda: _Conn(self._sock, "fuzz")

    def generate(self, rng: random.Random) -> bytes:
        if rng.random() < 0.05:
            return random_bytes(rng)
        return mutate(rng, rng.choice(self.corpus), HTTP_TOKENS, self.corpus)

    def _parse(self, parts: List[bytes]) -> Tuple[str, Optional[http.Request]]:
        parser = http.RequestParser()
        for part in parts:
            try:
                request = parser.feed(part)
            except http.HttpError as err:
                return f"error {err.status}", None
            if request is not None:
                return "request", request
            if len(parser._buf) > max(http.MAX_HEAD, http.MAX_BODY):
                raise Unexpected(f"the parser buffers {len(parser._buf)} bytes")
        return "incomplete", None

    def check(self, data: bytes, rng: random.Random) -> None:
        whole, request = self._parse([data])
        cut, request2 = self._parse(pieces(rng, data))
        if (whole, request) != (cut, request2):
            raise Unexpected(f"whole: {whole} {request}; in pieces: {cut} {request2}")
        if request is not None:
            self.scene.control_answer = rng.choice([None, "no leech"])
            conn = self._conn()
            self.web._handle(conn, request)
            out = bytes(conn.out)
            if not out.startswith(b"HTTP/1.1 ") or out[9:12] == b"500":
                raise Unexpected(f"answered {out[:60]!r}")

    def close(self) -> None:
        self._sock.close()
        self.web.close_all()


# == UDP ========================================================================


class _UdpScene:
    """A server and an established client in the seeded in-memory network of
    tests/udp/link.py, after some real traffic on every channel; every
    datagram each side sent is captured, to be mutated."""

    def __init__(self, seed: int) -> None:
        from tests.udp.link import CLIENT, SERVER, LinkSpec, Pair

        self.client_addr, self.server_addr = CLIENT, SERVER
        config = Config(token=b"fuzz token", max_message=256 << 10, receive_buffer=1 << 20)
        self.pair = Pair(seed, LinkSpec(loss=0.0, delay=0.002), server_config=config, client_config=config)
        self.captured: Dict[object, List[bytes]] = {CLIENT: [], SERVER: []}
        self.pair.net.taps.append(self._tap)
        self.pair.connect()
        rng = random.Random(seed)
        server_side = self.pair.server_side(self.client.session)
        for i in range(20):
            self.client.send_message(Channel.CONTROL, rng.randbytes(rng.randrange(2000)))
            server_side.send_message(Channel.CONTROL, b"reply %d" % i)
            server_side.send_events(rng.randbytes(rng.randrange(1, 900)), rng.randint(1, 9), self.pair.net.now)
        server_side.send_message(Channel.STATE, rng.randbytes(20_000))
        net = self.pair.net
        net.run(net.now + 5.0, stop=lambda: not server_side.unacked_messages and not self.client.unacked_messages)
        self.client.close(net.now, "fuzz capture")  # a close frame to mutate, then a fresh pair
        net.run(net.now + 0.05)
        self.pair = Pair(seed + 1, LinkSpec(loss=0.0, delay=0.002), server_config=config, client_config=config)
        self.pair.connect()
        self.now = self.pair.net.now

    @property
    def client(self) -> ClientConnection:
        return self.pair.client.conn

    @property
    def server(self) -> Server:
        return self.pair.server.server

    def _tap(self, what: str, src: object, dst: object, data: bytes, now: float) -> None:
        if what == "sent" and src in self.captured:
            self.captured[src].append(data)

    def tick(self) -> float:
        self.now += 0.001
        return self.now


UDP_TOKENS: Tuple[bytes, ...] = (udp_packet.MAGIC, bytes([udp_packet.VERSION]), bytes([0]), bytes([1]), bytes([2]),
                                 bytes([3]), bytes([4]), bytes([5]), b"\xff" * 8, b"\x00" * 8, b"\x00\x00\x00\x01")


class UdpFuzzer(Fuzzer):
    """``Server.receive_datagram`` or ``ClientConnection.receive_datagram`` (both
    never raise; drops are counted) fed datagrams captured from a real
    handshake and traffic, mutated; random bytes; and, since a bad tag stops
    everything else at the door, DATA packets whose frames are mutated and
    then sealed again with the sender's real key, which reach the frame
    decoder and the connection's logic.  ``internal_error`` (the count of a
    caught bug) must stay zero; the server must hold no state for
    unauthenticated peers.  A connection the fuzz closed is replaced."""

    def __init__(self, to_server: bool) -> None:
        self.to_server = to_server
        self.name = "udp-server" if to_server else "udp-client"
        self.seed = 11
        self.scene = _UdpScene(self.seed)
        sender = self.scene.client_addr if to_server else self.scene.server_addr
        self.corpus = self.scene.captured[sender]
        self.data_packets = [d for d in self.corpus if len(d) > udp_packet.HEADER.size + udp_packet.TAG_SIZE
                             and d[3] == udp_packet.PacketType.DATA]
        self.rebuilt = 0
        self.last_error = ""
        self._watch(self.scene)

    def _watch(self, scene: _UdpScene) -> None:
        """Keep the traceback of a bug the server's catch-all counts (it is
        counted inside its ``except`` block, so the exception is current)."""
        server = scene.server
        count = server._count

        def counting(key: str) -> None:
            if key == "internal_error":
                self.last_error = traceback.format_exc()
            count(key)

        server._count = counting  # type: ignore[method-assign]

    def generate(self, rng: random.Random) -> bytes:
        r = rng.random()
        if r < 0.08:
            return random_bytes(rng, 1400)
        if r < 0.5 and self.data_packets:
            # A marker for check(): reseal these frames under the real key.
            packet = rng.choice(self.data_packets)
            frames = packet[udp_packet.HEADER.size : -udp_packet.TAG_SIZE]
            return b"SEAL" + mutate(rng, frames, UDP_TOKENS)
        return mutate(rng, rng.choice(self.corpus), UDP_TOKENS, self.corpus)

    def _seal(self, frames: bytes) -> bytes:
        scene = self.scene
        conn = scene.client if self.to_server else scene.pair.server_side(scene.client.session)
        pn = conn._next_pn
        conn._next_pn = pn + 1
        conn.recovery.largest_sent = pn
        return udp_packet.seal(conn._send_key, udp_packet.data_header(conn.session, pn) + frames)

    def check(self, data: bytes, rng: random.Random) -> None:
        scene = self.scene
        if data.startswith(b"SEAL"):
            data = self._seal(data[4:])
        now = scene.tick()
        if self.to_server:
            addr = scene.client_addr if rng.random() < 0.9 else ("10.9.9.9", 9999)
            server = scene.server
            server.receive_datagram(data, addr, now)
            server.datagrams_to_send(now)
            server.on_timer(now)
            while server.next_event() is not None:
                pass
            counters = server.all_counters()
        else:
            client = scene.client
            client.receive_datagram(data, now)
            client.datagrams_to_send(now)
            client.on_timer(now)
            details = []
            while (event := client.next_event()) is not None:
                details.append(repr(event))
            counters = dict(client.counters)
            if counters.get("internal_error"):
                self.last_error = "\n".join(details)
        if counters.get("internal_error"):
            error, self.last_error = self.last_error, ""
            self._rebuild()
            raise Unexpected(f"internal_error counted (a caught bug):\n{error}")
        if len(scene.server.connections) > 2:
            raise Unexpected(f"the server holds {len(scene.server.connections)} connections")
        if not (scene.client.is_established and scene.client.session in scene.server.connections):
            self._rebuild()

    def _rebuild(self) -> None:
        """A fresh established pair (the captured corpus is kept)."""
        self.rebuilt += 1
        captured = self.scene.captured
        self.scene = _UdpScene(self.seed + 2 * self.rebuilt)
        self.scene.captured = captured
        self._watch(self.scene)


# == registry ===================================================================

FUZZERS: Dict[str, Callable[[], Fuzzer]] = {
    "eventlog-strict": lambda: EventLogFuzzer(strict=True),
    "eventlog-lenient": lambda: EventLogFuzzer(strict=False),
    "source": SourceFuzzer,
    "frames": FrameFuzzer,
    "hub-client": HubClientFuzzer,
    "service": ServiceFuzzer,
    "udp-server": lambda: UdpFuzzer(to_server=True),
    "udp-client": lambda: UdpFuzzer(to_server=False),
    "http": HttpFuzzer,
}


def iter_fuzzers(names: Sequence[str]) -> Iterator[Fuzzer]:
    for name in names:
        yield FUZZERS[name]()

#!/usr/bin/env python3
"""Leech overhead: what running under ``lpm run`` costs a program, next to peers.

Five workloads (``bench/workloads/``), each a standalone script that prints
``BENCH_ELAPSED <seconds>`` around its hot section only (so interpreter
start-up, tool start-up and report writing are left out of the main ratio):

``calls``    recursive fib plus a small object/method scheduler
``gc``       trees with parent<->child cycles and self-referencing dicts
``threads``  four threads: Python work, 1 ms sleeps, pipe and file I/O
``asyncio``  1000 producer tasks and 8 consumers over an asyncio.Queue
``json``     json.dumps/json.loads of a ~1 MB document, repeatedly

Variants, all run side by side in one invocation:

``aa``              the plain program again (A/A: the noise of the method)
``lpm``             ``python -m lpm run`` with its defaults (native leech when it
                    loads, else the pure-Python one), a reader thread here draining
                    its data FIFO (``lpm.leech.paths.open_reader``) so it really streams
``lpm-noreader``    the same with nobody reading (bounded backlog, events dropped)
``lpm-python``      ``lpm run --implementation python``, with a reader
``lpm-native``      ``lpm run --implementation native``, with a reader; only when
                    ``import lpm.leech.native`` works in the bench interpreter
``lpm-gil``         the same with ``--sampler gil``: the monitor thread takes the
                    GIL for every sample instead of the background sampler
``lpm-nosample``    the same with ``--sample-rate 0``: what everything but
                    sampling costs
``lpm-walked``      the same with ``--keep-out off``: lpm's own objects walked by
                    the program's collections, as before the native leech kept
                    them out (lpm.leech.footprint)
``py-spy``          ``py-spy record -r 100 -o /dev/null -- python w.py`` (blocking mode)
``pyinstrument``    ``python -m pyinstrument -r text -o /dev/null w.py`` (1 ms interval)
``cprofile``        ``python -m cProfile -o OUT w.py``

Method (as in ``shared/reference/baseline-measurements.md``): for every round
and workload the variants run in a shuffled order, each immediately after its
own plain run (A B A B ...); a ratio is the variant's hot time over that paired
plain hot time.  Cells are the median ratio over rounds with the min-max.  Per
pair the whole process is measured too: wall time around the child, and its
CPU time from ``os.wait4`` (the numbers a ``getrusage(RUSAGE_CHILDREN)`` delta
gives, but per child); for py-spy the child is py-spy itself, and its CPU includes
the sampled program (py-spy waits for it).  Peak RSS is what each workload prints
about itself (``BENCH_MAXRSS``: ``VmHWM`` from ``/proc/self/status``, which starts
afresh at exec, unlike ``ru_maxrss``, which Linux carries over from the forking
parent); for py-spy it is the sampled program's, py-spy's own memory is not
counted.  The RSS table and the leech memory figure use it.

The peers are not project dependencies: they live in a bench virtualenv made
with the project's Python (``--python``, default: this interpreter) under
``--venv`` (default ``$XDG_CACHE_HOME/lpm-bench/venv-<version>``), which the
script creates or reuses, installing ``py-spy`` and ``pyinstrument`` there with
pip.  lpm itself is not installed into it: every variant, plain included, runs
with ``PYTHONPATH`` set to this checkout, so what is measured is the working
tree (including any native library built in ``lpm/_native/``).

The marker-rate test runs ``bench/workloads/marker_rate.py`` under ``lpm run``
for each target rate (markers/s from one thread, paced with perf_counter, for
``--marker-seconds``) and implementation, with a reader that keeps the bytes and
decodes them afterwards (``drain``: the leech's own ceiling) and one that decodes
live as bytes arrive (``live``: what one Python consumer sustains), both with
``lpm.eventlog.read_events``/``EventLogReader`` and
``lpm.eventlog.accounting.Accounting``.  A run is lossless when no
``PyDataLoss`` arrived, every thread's accounts balance, the stream is complete
and every emitted marker arrived; the result per implementation and reader is
the highest target rate at which every repetition was lossless.

It prints numbers and asserts nothing about speed.  Machine noise on a shared
2-vCPU VM is +-10-15%: read ratios within that band as "no measurable slowdown".

Examples::

    python bench/overhead.py --quick                       # smoke run, ~2 minutes
    python bench/overhead.py --json /tmp/overhead.json     # 5 rounds, ~20 minutes
    python bench/overhead.py --variants lpm,py-spy --workloads calls,json --rounds 3
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from machine import cpu_model  # bench/machine.py, beside this script

BENCH_DIR = Path(__file__).resolve().parent
WORKLOAD_DIR = BENCH_DIR / "workloads"
REPO_ROOT = BENCH_DIR.parent

if importlib.util.find_spec("lpm") is None:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

from lpm.eventlog import EndOfStream, Event, EventLogReader, Header, read_events  # noqa: E402
from lpm.eventlog import events as ev  # noqa: E402
from lpm.eventlog.accounting import Accounting  # noqa: E402
from lpm.leech.paths import open_reader  # noqa: E402

#: Workload name -> script in bench/workloads/ (names avoid shadowing stdlib modules).
WORKLOADS: Dict[str, str] = {
    "calls": "calls.py",
    "gc": "alloc_gc.py",
    "threads": "threads_io.py",
    "asyncio": "async_tasks.py",
    "json": "json_docs.py",
}
#: Every script run_once can run: the workloads and the empty program (start-up costs).
SCRIPTS: Dict[str, str] = dict(WORKLOADS, empty="empty.py")
MARKER_PROGRAM = WORKLOAD_DIR / "marker_rate.py"
DEFAULT_MARKER_RATES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
#: Longest a single child may run before it is killed and the run counted as failed.
RUN_TIMEOUT = 300.0
MIB = 1024.0  # ru_maxrss is in KiB on Linux


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    kind: str  # plain | lpm | py-spy | pyinstrument | cprofile
    implementation: Optional[str] = None  # lpm: None (auto), "python", "native"
    reader: bool = False  # lpm: drain the data FIFO from a thread here
    options: Tuple[str, ...] = ()  # lpm: more options of lpm run


PLAIN = Variant("plain", "plain (no profiler)", "plain")
VARIANTS: List[Variant] = [
    Variant("aa", "plain again (A/A noise check)", "plain"),
    Variant("lpm", "lpm run (default{auto}), reader draining", "lpm", None, True),
    Variant("lpm-noreader", "lpm run (default{auto}), nobody reading", "lpm", None, False),
    Variant("lpm-python", "lpm run --implementation python, reader", "lpm", "python", True),
    Variant("lpm-native", "lpm run --implementation native, reader", "lpm", "native", True),
    Variant("lpm-gil", "lpm run --implementation native --sampler gil, reader", "lpm", "native", True, ("--sampler", "gil")),
    Variant("lpm-nosample", "lpm run --implementation native --sample-rate 0, reader", "lpm", "native", True,
            ("--sample-rate", "0")),
    Variant("lpm-walked", "lpm run --implementation native --keep-out off, reader", "lpm", "native", True,
            ("--keep-out", "off")),
    Variant("py-spy", "py-spy record -r 100 (blocking; separate process)", "py-spy"),
    Variant("pyinstrument", "pyinstrument (1 ms interval, main thread)", "pyinstrument"),
    Variant("cprofile", "cProfile -o (main thread)", "cprofile"),
]
VARIANT_NAMES = [v.name for v in VARIANTS]


# -- the bench virtualenv ----------------------------------------------------


@dataclass
class BenchEnv:
    python: str  # the venv's interpreter: runs every variant
    venv: Path
    py_spy: Optional[str]
    pyinstrument: bool
    native: bool
    native_note: str
    versions: Dict[str, str] = field(default_factory=dict)


def default_venv_dir(python: str) -> Path:
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "lpm-bench" / f"venv-{version}"


def _quiet(cmd: Sequence[str], env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=env)


def ensure_venv(venv: Path, python: str, peers: bool) -> BenchEnv:
    """Create or reuse the bench virtualenv; install the peers into it with pip."""
    vpy = venv / "bin" / "python"
    if not vpy.exists():
        note(f"creating the bench virtualenv {venv} with {python}")
        venv.parent.mkdir(parents=True, exist_ok=True)
        done = _quiet([python, "-m", "venv", str(venv)])
        if done.returncode != 0:
            raise SystemExit(f"overhead: cannot create {venv}: {done.stderr.strip()}")
    spy = venv / "bin" / "py-spy"
    if peers and (not spy.exists() or _quiet([str(vpy), "-c", "import pyinstrument"]).returncode != 0):
        note("installing py-spy and pyinstrument into the bench virtualenv (pip)")
        done = _quiet([str(vpy), "-m", "pip", "install", "-q", "py-spy", "pyinstrument"])
        if done.returncode != 0:
            note(f"pip install failed; peers that are missing are skipped:\n{done.stderr.strip()[-2000:]}")
    env = child_env()
    has_pyinstrument = _quiet([str(vpy), "-c", "import pyinstrument"], env).returncode == 0
    native = _quiet([str(vpy), "-c", "import lpm.leech.native"], env)
    native_note = "" if native.returncode == 0 else (native.stderr.strip().splitlines() or ["?"])[-1]
    bench = BenchEnv(
        python=str(vpy),
        venv=venv,
        py_spy=str(spy) if spy.exists() else None,
        pyinstrument=has_pyinstrument,
        native=native.returncode == 0,
        native_note=native_note,
    )
    bench.versions["python"] = _quiet([str(vpy), "-c", "import sys; print(sys.version.split()[0])"]).stdout.strip()
    if bench.py_spy:
        bench.versions["py-spy"] = _quiet([bench.py_spy, "--version"]).stdout.strip()
    if has_pyinstrument:
        bench.versions["pyinstrument"] = _quiet(
            [str(vpy), "-c", "import pyinstrument; print(pyinstrument.__version__)"]
        ).stdout.strip()
    return bench


def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """This environment without LPM_* settings, with PYTHONPATH = this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LPM_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra or {})
    return env


# -- one run -------------------------------------------------------------------


@dataclass
class Run:
    variant: str
    workload: str
    ok: bool
    hot: Optional[float] = None  # BENCH_ELAPSED, seconds
    hot_cpu: Optional[float] = None  # BENCH_CPU: the main thread's CPU seconds in the hot section
    wall: float = 0.0  # whole child process, seconds
    cpu: float = 0.0  # user + sys of the child (and its waited-for children), seconds
    # ru_maxrss of the child from wait4.  Not the child's own peak: Linux keeps the
    # forking parent's high-water mark across exec, so this is at least our own RSS.
    maxrss_kib: int = 0
    self_maxrss_kib: Optional[int] = None  # BENCH_MAXRSS: the profiled interpreter's own peak (VmHWM)
    steal: Optional[float] = None  # share of both CPUs stolen by the hypervisor during the run
    implementation: Optional[str] = None  # lpm with a reader: the leech the stream says it came from
    reader_bytes: Optional[int] = None
    reader_cpu: Optional[float] = None  # CPU seconds of the reader thread here
    pyspy_samples: Optional[int] = None
    pyspy_errors: Optional[int] = None
    error: str = ""


class FifoDrain(threading.Thread):
    """Finds the leech's data FIFO in ``directory``, attaches and reads it to EOF.

    ``keep``: keep the bytes; ``live``: decode them as they arrive and keep the
    accounts (the bytes are then dropped)."""

    def __init__(self, directory: str, exited: threading.Event, keep: bool = False, live: bool = False) -> None:
        super().__init__(daemon=True, name="bench-fifo-drain")
        self.directory = directory
        self.exited = exited
        self.keep = keep
        self.live = live
        self.data = bytearray()
        self.head = bytearray()  # the first bytes, where RtsIdentifier names the implementation
        self.nbytes = 0
        self.cpu = 0.0
        self.error = ""
        self.found = False
        self.decoded: Optional[Decoded] = Decoded() if live else None
        self._reader = EventLogReader() if live else None

    def _find(self) -> Optional[str]:
        while True:
            found = glob.glob(os.path.join(self.directory, "lpm-*.data"))
            if found:
                return sorted(found)[0]
            if self.exited.is_set():
                return None
            time.sleep(0.001)

    def run(self) -> None:
        path = self._find()
        if path is None:
            self.error = "the program ended before its FIFO appeared"
            return
        self.found = True
        start = time.thread_time()
        try:
            fd = open_reader(path)
        except OSError as err:
            self.error = f"open_reader: {err}"
            return
        with open(fd, "rb", buffering=0) as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                self.nbytes += len(chunk)
                if len(self.head) < _HEAD_KEEP:
                    self.head += chunk[: _HEAD_KEEP - len(self.head)]
                if self.keep:
                    self.data += chunk
                if self._reader is not None and self.decoded is not None:
                    self._reader.feed(chunk)
                    self.decoded.add_all(self._reader.events())
        if self._reader is not None and self.decoded is not None:
            self._reader.close()
            self.decoded.add_all(self._reader.events())
        self.cpu = time.thread_time() - start

    @property
    def implementation(self) -> Optional[str]:
        """"native" or "python", as the stream's RtsIdentifier says."""
        found = _IMPL.search(self.head)
        return found.group(1).decode() if found else None


_HEAD_KEEP = 1 << 18
_IMPL = re.compile(rb"lpm-[0-9][^ \x00]* (native|python)")


def read_steal() -> Tuple[int, int]:
    """(steal ticks, all ticks) of all CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return 0, 0
    ticks = [int(x) for x in fields[:8]]
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)


_FLOAT = re.compile(rb"^BENCH_ELAPSED ([0-9.eE+-]+)\s*$", re.M)
_RSS = re.compile(rb"^BENCH_MAXRSS (\d+)\s*$", re.M)
_CPU = re.compile(rb"^BENCH_CPU ([0-9.eE+-]+)\s*$", re.M)
_PYSPY = re.compile(rb"Samples: (\d+) Errors: (\d+)")


def command(variant: Variant, script: Path, bench: BenchEnv, scratch: str) -> List[str]:
    py = bench.python
    if variant.kind == "plain":
        return [py, str(script)]
    if variant.kind == "lpm":
        impl = ["--implementation", variant.implementation] if variant.implementation else []
        return [py, "-m", "lpm", "run", *impl, *variant.options, str(script)]
    if variant.kind == "py-spy":
        assert bench.py_spy is not None
        return [bench.py_spy, "record", "-r", "100", "-o", "/dev/null", "--", py, str(script)]
    if variant.kind == "pyinstrument":
        return [py, "-m", "pyinstrument", "-r", "text", "-o", "/dev/null", str(script)]
    if variant.kind == "cprofile":
        return [py, "-m", "cProfile", "-o", os.path.join(scratch, "out.prof"), str(script)]
    raise ValueError(variant.kind)


def run_child(
    cmd: Sequence[str], env: Dict[str, str], scratch: str, drain: Optional[FifoDrain], exited: threading.Event
) -> Tuple[int, float, "resource.struct_rusage", bytes, bytes]:
    """Run ``cmd`` to its end; (exit code, wall, rusage, stdout, stderr)."""
    out_path, err_path = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=scratch)
        if drain is not None:
            drain.start()
        killer = threading.Timer(RUN_TIMEOUT, proc.kill)
        killer.daemon = True
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        exited.set()
    with open(out_path, "rb") as f:
        stdout = f.read()
    with open(err_path, "rb") as f:
        stderr = f.read()
    return proc.returncode, wall, usage, stdout, stderr


def run_once(variant: Variant, workload: str, bench: BenchEnv, scale: float) -> Run:
    script = WORKLOAD_DIR / SCRIPTS[workload]
    scratch = tempfile.mkdtemp(prefix="lpm-overhead-")  # 0700: also the LPM_DIR
    try:
        env = child_env({"LPM_BENCH_SCALE": repr(scale), "LPM_DIR": scratch})
        exited = threading.Event()
        drain = FifoDrain(scratch, exited) if variant.kind == "lpm" and variant.reader else None
        steal0, all0 = read_steal()
        code, wall, usage, stdout, stderr = run_child(
            command(variant, script, bench, scratch), env, scratch, drain, exited
        )
        steal1, all1 = read_steal()
        result = Run(variant.name, workload, ok=False, wall=wall)
        result.cpu = usage.ru_utime + usage.ru_stime
        result.maxrss_kib = usage.ru_maxrss
        result.steal = (steal1 - steal0) / (all1 - all0) if all1 > all0 else None
        if drain is not None:
            drain.join(timeout=10.0)
            if drain.is_alive():
                result.error = "reader still blocked 10 s after the program ended; "
            else:
                result.reader_bytes = drain.nbytes
                result.implementation = drain.implementation
                result.reader_cpu = drain.cpu
                if drain.error:
                    result.error = f"reader: {drain.error}; "
        hot = _FLOAT.search(stdout)
        rss = _RSS.search(stdout)
        if variant.kind == "py-spy":
            counts = _PYSPY.search(stdout + stderr)
            if counts:
                result.pyspy_samples, result.pyspy_errors = int(counts.group(1)), int(counts.group(2))
        if rss:
            result.self_maxrss_kib = int(rss.group(1))
        if code != 0 or hot is None:
            tail = stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            result.error += f"exit {code}, {'no BENCH_ELAPSED' if hot is None else 'BENCH_ELAPSED printed'}: {' | '.join(tail)}"
            return result
        result.hot = float(hot.group(1))
        cpu = _CPU.search(stdout)
        result.hot_cpu = float(cpu.group(1)) if cpu else None
        result.ok = True
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- the matrix ----------------------------------------------------------------


@dataclass
class Pair:
    round: int
    variant: str
    workload: str
    plain: Run
    tool: Run

    @property
    def ok(self) -> bool:
        return self.plain.ok and self.tool.ok

    def ratio(self, what: str) -> Optional[float]:
        if not self.ok:
            return None
        a, b = getattr(self.plain, what), getattr(self.tool, what)
        if a is None or b is None or a <= 0:
            return None
        return float(b) / float(a)


def run_matrix(
    variants: List[Variant], workloads: List[str], bench: BenchEnv, rounds: int, scale: float, rng: random.Random
) -> List[Pair]:
    pairs: List[Pair] = []
    total = rounds * len(workloads) * len(variants)
    done = 0
    for w in workloads:  # warm-up: page cache, .pyc files; discarded
        run_once(PLAIN, w, bench, scale)
    for r in range(rounds):
        for w in workloads:
            order = list(variants)
            rng.shuffle(order)
            for v in order:
                plain = run_once(PLAIN, w, bench, scale)
                tool = run_once(v, w, bench, scale)
                pair = Pair(r, v.name, w, plain, tool)
                pairs.append(pair)
                done += 1
                ratio = pair.ratio("hot")
                shown = f"{ratio:.2f}" if ratio is not None else f"FAILED ({plain.error or tool.error})"
                note(
                    f"[{done}/{total}] round {r + 1} {w:8s} {v.name:13s} plain {_s(plain.hot)} "
                    f"tool {_s(tool.hot)} ratio {shown}"
                )
    return pairs


def _s(x: Optional[float]) -> str:
    return f"{x:.3f}s" if x is not None else "  -   "


# -- start-up ------------------------------------------------------------------

_STARTUP_PROBE = """
import time
t0 = time.perf_counter()
import lpm
t1 = time.perf_counter()
lpm.start()
t2 = time.perf_counter()
lpm.stop()
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def measure_startup(bench: BenchEnv, variant: Variant, reps: int) -> Tuple[str, Dict[str, Any]]:
    """What lpm costs a program that does nothing: whole-process wall, CPU and
    RSS of an empty script, plain and under ``lpm run``, paired; and import,
    start() and stop() times measured inside one interpreter."""
    pairs = [(run_once(PLAIN, "empty", bench, 1.0), run_once(variant, "empty", bench, 1.0)) for _ in range(reps)]
    pairs = [(a, b) for a, b in pairs if a.ok and b.ok]
    probes: List[List[float]] = []
    for _ in range(reps):
        scratch = tempfile.mkdtemp(prefix="lpm-overhead-")
        try:
            done = _quiet([bench.python, "-c", _STARTUP_PROBE], child_env({"LPM_DIR": scratch}))
            if done.returncode == 0:
                probes.append([float(x) for x in done.stdout.split()])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    raw: Dict[str, Any] = {
        "pairs": [{"plain": asdict(a), "lpm": asdict(b)} for a, b in pairs],
        "import_start_stop_s": probes,
    }
    if not pairs:
        return "## Start-up: no successful runs", raw

    def ms(values: Sequence[float]) -> str:
        return f"{statistics.median(values) * 1e3:.0f} ms"

    rows = [
        ["plain", ms([a.wall for a, _ in pairs]), ms([a.cpu for a, _ in pairs]), f"{statistics.median([(a.self_maxrss_kib or 0) / MIB for a, _ in pairs]):.1f}"],
        [variant.name, ms([b.wall for _, b in pairs]), ms([b.cpu for _, b in pairs]), f"{statistics.median([(b.self_maxrss_kib or 0) / MIB for _, b in pairs]):.1f}"],
        [
            "difference",
            ms([b.wall - a.wall for a, b in pairs]),
            ms([b.cpu - a.cpu for a, b in pairs]),
            f"{statistics.median([((b.self_maxrss_kib or 0) - (a.self_maxrss_kib or 0)) / MIB for a, b in pairs]):+.1f}",
        ],
    ]
    out = [f"## Start-up and shutdown: an empty program, plain and under lpm run (median of {len(pairs)} pairs)\n"]
    out.append(table(["run", "process wall", "process CPU", "peak RSS MiB"], rows))
    if probes:
        out.append(
            f"\nInside one interpreter (median of {len(probes)}): `import lpm` {ms([p[0] for p in probes])}, "
            f"`lpm.start()` {ms([p[1] for p in probes])}, `lpm.stop()` {ms([p[2] for p in probes])} (nobody reading)."
        )
    return "\n".join(out), raw


# -- marker rate ---------------------------------------------------------------


@dataclass
class Decoded:
    """Counts from one decoded lpm stream."""

    accounting: Accounting = field(default_factory=Accounting)
    markers: int = 0
    lost: int = 0  # sum of PyDataLoss counts
    complete: bool = False
    headers: int = 0

    def add_all(self, items: Iterable[object]) -> None:
        for item in items:
            if isinstance(item, Event):
                kind = type(item)
                if kind is ev.UserMarker:
                    self.markers += 1
                elif kind is ev.PyDataLoss:
                    assert isinstance(item, ev.PyDataLoss)
                    self.lost += item.count
                self.accounting.add(item)
            elif isinstance(item, Header):
                self.headers += 1
                self.accounting.reset()
            elif isinstance(item, EndOfStream):
                self.complete = item.complete

    @property
    def balanced(self) -> bool:
        return bool(self.accounting.threads) and all(a.balanced for a in self.accounting.threads.values())


@dataclass
class MarkerRun:
    implementation: str
    reader: str  # drain | live
    target: int
    ok: bool = False
    emitted: int = 0
    seconds: float = 0.0
    received: int = 0
    lost: int = 0
    balanced: bool = False
    complete: bool = False
    sink_dropped: Optional[int] = None
    stream_bytes: int = 0
    reader_cpu: float = 0.0
    #: thread -> (received, lost, first_seq, produced, gaps) of accounts that do not balance
    unbalanced: Dict[int, Tuple[int, int, Optional[int], Optional[int], int]] = field(default_factory=dict)
    error: str = ""

    @property
    def achieved(self) -> float:
        return self.emitted / self.seconds if self.seconds > 0 else 0.0

    @property
    def lossless(self) -> bool:
        return (
            self.ok and self.lost == 0 and self.balanced and self.complete and self.received == self.emitted > 0
        )


def marker_run(bench: BenchEnv, implementation: str, reader: str, target: int, seconds: float) -> MarkerRun:
    result = MarkerRun(implementation, reader, target)
    scratch = tempfile.mkdtemp(prefix="lpm-overhead-mr-")
    try:
        env = child_env({"LPM_DIR": scratch})
        exited = threading.Event()
        drain = FifoDrain(scratch, exited, keep=reader == "drain", live=reader == "live")
        cmd = [
            bench.python, "-m", "lpm", "run", "--implementation", implementation,
            str(MARKER_PROGRAM), str(target), repr(seconds),
        ]  # fmt: skip
        code, _wall, _usage, stdout, stderr = run_child(cmd, env, scratch, drain, exited)
        drain.join(timeout=60.0)
        if drain.is_alive():
            result.error = "reader did not finish"
            return result
        if code != 0:
            result.error = f"exit {code}: {stderr.decode('utf-8', 'replace').strip()[-300:]}"
            return result
        for line in stdout.decode().splitlines():
            if line.startswith("MARKERS "):
                _, n, s = line.split()
                result.emitted, result.seconds = int(n), float(s)
            elif line.startswith("{"):
                result.sink_dropped = json.loads(line).get("stats", {}).get("dropped")
        if drain.decoded is not None:
            decoded = drain.decoded
        else:
            decoded = Decoded()
            decoded.add_all(read_events(bytes(drain.data)))
        result.stream_bytes = drain.nbytes
        result.reader_cpu = drain.cpu
        result.received = decoded.markers
        result.lost = decoded.lost
        result.balanced = decoded.balanced
        result.complete = decoded.complete
        result.unbalanced = {
            n: (a.received, a.lost, a.first_seq, a.produced, a.gaps)
            for n, a in decoded.accounting.threads.items()
            if not a.balanced
        }
        result.ok = True
        if drain.error:
            result.error = drain.error
        return result
    except Exception as err:  # noqa: BLE001 - a corrupt stream is a result too
        result.error = f"{type(err).__name__}: {err}"
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_markers(
    bench: BenchEnv, implementations: List[str], readers: List[str], rates: List[int], reps: int, seconds: float
) -> List[MarkerRun]:
    runs: List[MarkerRun] = []
    for impl in implementations:
        for reader in readers:
            for rate in rates:
                for _ in range(reps):
                    m = marker_run(bench, impl, reader, rate, seconds)
                    runs.append(m)
                    note(
                        f"markers {impl:6s} {reader:5s} target {rate:>9,}/s achieved {m.achieved:>11,.0f}/s "
                        f"received {m.received:>9,}/{m.emitted:<9,} lost {m.lost:<9,} balanced {m.balanced} "
                        f"complete {m.complete} {m.error}"
                        + (f" unbalanced (received, lost, first_seq, produced, gaps): {m.unbalanced}" if m.unbalanced else "")
                    )
    return runs


# -- reporting -----------------------------------------------------------------


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def med_range(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "—"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summarize(
    pairs: List[Pair], variants: List[Variant], workloads: List[str], labels: Dict[str, str]
) -> Tuple[str, Dict[str, Any]]:
    out: List[str] = []
    summary: Dict[str, Any] = {"ratios": {}, "plain": {}, "memory": {}}

    def cell(v: str, w: str) -> List[Pair]:
        return [p for p in pairs if p.variant == v and p.workload == w]

    # Hot-section ratios.
    rows = []
    for v in variants:
        row = [labels[v.name]]
        for w in workloads:
            ratios = [r for r in (p.ratio("hot") for p in cell(v.name, w)) if r is not None]
            failed = sum(1 for p in cell(v.name, w) if not p.ok)
            summary["ratios"].setdefault(v.name, {})[w] = ratios
            row.append(med_range(ratios) + (f" [{failed} failed]" if failed else ""))
        rows.append(row)
    out.append("## Slowdown of the hot section: median ratio (min–max) over rounds, 1.00 = none\n")
    out.append(table(["variant", *workloads], rows))

    # The same for the CPU time of the program's main thread in it: its own
    # work, without the time it waited for the GIL or a core.
    rows = []
    for v in variants:
        row = [labels[v.name]]
        for w in workloads:
            ratios = [r for r in (p.ratio("hot_cpu") for p in cell(v.name, w)) if r is not None]
            summary.setdefault("cpu_ratios", {}).setdefault(v.name, {})[w] = ratios
            row.append(med_range(ratios) if ratios else "-")
        rows.append(row)
    out.append("\n## CPU time of the main thread in the hot section: median ratio (min–max) over rounds\n")
    out.append(table(["variant", *workloads], rows))

    for v in variants:
        if v.kind == "lpm" and v.reader:
            seen = sorted({str(p.tool.implementation) for p in pairs if p.variant == v.name and p.tool.ok})
            summary.setdefault("implementations", {})[v.name] = seen
            if len(seen) > 1 or (v.implementation and seen and seen != [v.implementation]):
                out.append(f"\nNote: {v.name} runs streamed from these leech implementations: {', '.join(seen)}.")
            elif seen:
                out.append(f"\n{v.name}: every stream came from the {seen[0]} leech (its RtsIdentifier).")

    # Plain baseline and A/A.
    rows = []
    for w in workloads:
        plain = [p.plain.hot for p in pairs if p.workload == w and p.plain.hot is not None]
        aa = [r for r in (p.ratio("hot") for p in cell("aa", w)) if r is not None]
        cv = statistics.pstdev(plain) / statistics.mean(plain) * 100 if len(plain) > 1 else 0.0
        summary["plain"][w] = plain
        rows.append([w, med_range(plain, "{:.3f}"), f"{cv:.1f}%", str(len(plain)), med_range(aa)])
    out.append("\n## Plain runs (every pair's A) and the A/A check\n")
    out.append(table(["workload", "plain hot s, median (min–max)", "CV", "n", "A/A ratio median (min–max)"], rows))

    # Whole process.
    rows = []
    for v in variants:
        row = [labels[v.name]]
        for w in workloads:
            walls = [r for r in (p.ratio("wall") for p in cell(v.name, w)) if r is not None]
            cpus = [r for r in (p.ratio("cpu") for p in cell(v.name, w)) if r is not None]
            row.append(
                f"{statistics.median(walls):.2f} / {statistics.median(cpus):.2f}" if walls and cpus else "—"
            )
        rows.append(row)
    out.append("\n## Whole process (start-up, hot section, teardown): median wall ratio / CPU ratio\n")
    out.append(table(["variant", *workloads], rows))

    # Peak RSS.
    rows = []
    for v in [PLAIN, *variants]:
        row = [labels.get(v.name, v.label)]
        for w in workloads:
            runs = [p.plain for p in pairs if p.workload == w] if v is PLAIN else [p.tool for p in cell(v.name, w)]
            own = [r.self_maxrss_kib / MIB for r in runs if r.ok and r.self_maxrss_kib]
            row.append(f"{statistics.median(own):.1f}" if own else "—")
        rows.append(row)
    out.append("\n## Peak RSS of the profiled interpreter, MiB (median of its own VmHWM, printed by the workload)\n")
    out.append(table(["variant", *workloads], rows))
    out.append(
        "\npy-spy runs in a separate process, not counted here (the py-spy row is the sampled program alone). "
        "wait4's ru_maxrss is in the JSON but not shown: Linux carries the forking parent's high-water mark "
        "across exec, so it is at least this benchmark's own RSS."
    )

    # Leech memory.
    rows = []
    for v in variants:
        if v.kind != "lpm":
            continue
        extra_all: List[float] = []
        row = [labels[v.name]]
        for w in workloads:
            extra = [
                (p.tool.self_maxrss_kib - p.plain.self_maxrss_kib) / MIB
                for p in cell(v.name, w)
                if p.ok and p.tool.self_maxrss_kib and p.plain.self_maxrss_kib
            ]
            extra_all += extra
            row.append(med_range(extra, "{:+.1f}"))
        summary["memory"][v.name] = extra_all
        row.append(f"{statistics.median(extra_all):+.1f}" if extra_all else "—")
        rows.append(row)
    if rows:
        out.append("\n## Leech memory: peak RSS under lpm minus the paired plain run, MiB, median (min–max)\n")
        out.append(table(["variant", *workloads, "all workloads"], rows))

    # Streaming.
    rows = []
    for v in variants:
        if v.kind != "lpm" or not v.reader:
            continue
        row = [labels[v.name]]
        for w in workloads:
            got = [p.tool for p in cell(v.name, w) if p.tool.ok and p.tool.reader_bytes is not None]
            if got:
                mb = statistics.median([(r.reader_bytes or 0) / 1e6 for r in got])
                rate = statistics.median([(r.reader_bytes or 0) / 1e3 / r.wall for r in got])
                cpu = statistics.median([(r.reader_cpu or 0.0) * 1e3 for r in got])
                row.append(f"{mb:.2f} MB, {rate:.0f} kB/s, reader {cpu:.0f} ms CPU")
            else:
                row.append("—")
        rows.append(row)
    if rows:
        out.append("\n## What the leech streamed (median per run: bytes, bytes per second of process wall, reader CPU)\n")
        out.append(table(["variant", *workloads], rows))

    spy = [p.tool for p in pairs if p.variant == "py-spy" and p.tool.pyspy_samples is not None]
    if spy:
        rows = []
        for w in workloads:
            runs = [r for r in spy if r.workload == w]
            if runs:
                per_s = statistics.median([(r.pyspy_samples or 0) / r.wall for r in runs])
                errors = sum(r.pyspy_errors or 0 for r in runs)
                rows.append([w, f"{per_s:.0f}", str(errors)])
        out.append("\n## py-spy samples per second of process wall (median) and errors (sum)\n")
        out.append(table(["workload", "samples/s", "errors"], rows))

    steals = [r.steal for p in pairs for r in (p.plain, p.tool) if r.steal is not None]
    if steals:
        steals.sort()
        summary["steal"] = steals
        out.append(
            f"\nHypervisor steal per run (share of both vCPUs): median {statistics.median(steals) * 100:.1f}%, "
            f"90th pct {steals[int(0.9 * (len(steals) - 1))] * 100:.1f}%, max {steals[-1] * 100:.1f}%."
        )
    return "\n".join(out), summary


def summarize_markers(runs: List[MarkerRun], rates: List[int]) -> Tuple[str, Dict[str, Any]]:
    out: List[str] = []
    best: Dict[str, Any] = {}
    keys = sorted({(m.implementation, m.reader) for m in runs})
    rows = []
    for impl, reader in keys:
        row = [f"{impl}, {reader} reader"]
        highest: Optional[int] = None
        for rate in rates:
            ms = [m for m in runs if m.implementation == impl and m.reader == reader and m.target == rate]
            if not ms:
                row.append("—")
                continue
            ok = all(m.lossless for m in ms)
            achieved = statistics.median([m.achieved for m in ms])
            lost = sum(m.lost for m in ms)
            text = f"{'ok' if ok else 'LOSS'} {achieved / 1e3:,.0f}k/s"
            if not ok:
                detail = [
                    f"lost {lost:,}" if lost else "",
                    "unbalanced" if not all(m.balanced for m in ms) else "",
                    "incomplete" if not all(m.complete for m in ms) else "",
                    "error" if any(m.error for m in ms) else "",
                ]
                text += " (" + ", ".join(d for d in detail if d) + ")"
            row.append(text)
            if ok:
                highest = rate if highest is None else max(highest, rate)
        reached = [
            m.achieved for m in runs if m.implementation == impl and m.reader == reader and m.target == highest
        ]
        row.append(
            f"{highest:,}/s (achieved {statistics.median(reached):,.0f}/s)" if highest is not None and reached else "none"
        )
        best[f"{impl}/{reader}"] = {"highest_lossless_target": highest, "achieved": statistics.median(reached) if reached else None}
        rows.append(row)
    out.append("## Marker rate: lpm.marker() from one thread, per target rate (ok = every repetition lossless; achieved rate, median)\n")
    out.append(table(["leech, reader", *[f"{r:,}/s" for r in rates], "highest lossless target"], rows))
    out.append(
        "\n`drain`: the reader keeps the bytes and decodes them after the program ends (the leech's own limit); "
        "`live`: it decodes as the bytes arrive (read_events' incremental EventLogReader + Accounting in a "
        "Python thread of the bench process), so a slow consumer shows up as loss the leech reports."
    )
    return "\n".join(out), best


def machine_facts(bench: BenchEnv) -> Dict[str, Any]:
    facts: Dict[str, Any] = {
        "bench_python": bench.versions.get("python"),
        "runner_python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "tools": dict(bench.versions),
        "venv": str(bench.venv),
    }
    model = cpu_model()
    if model is not None:
        facts["cpu_model"] = model
    try:
        with open("/proc/meminfo") as f:
            facts["mem_total_kib"] = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return facts


# -- main ----------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Leech overhead: workloads under lpm run, py-spy, pyinstrument and cProfile, paired with plain runs.",
        epilog="Prints tables (markdown) on stdout and progress on stderr; it asserts nothing about speed.",
    )
    p.add_argument("--rounds", type=int, default=5, help="rounds of the A B A B matrix (default 5)")
    p.add_argument(
        "--scale", type=float, default=1.0, help="workload size factor, 1.0 = about 1.2 s of hot section each (default 1.0)"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, --scale 0.25, short marker test")
    p.add_argument(
        "--variants",
        default=",".join(VARIANT_NAMES),
        help=f"comma-separated subset of: {', '.join(VARIANT_NAMES)} (default all; lpm-native only if it imports)",
    )
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    p.add_argument("--json", metavar="FILE", help="write every raw number (all runs, pairs, marker runs) to FILE")
    p.add_argument(
        "--venv", metavar="DIR", help="bench virtualenv for the peers, created or reused (default ~/.cache/lpm-bench/venv-X.Y)"
    )
    p.add_argument(
        "--python", default=sys.executable, help="interpreter that creates the bench virtualenv (default: this one)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the variant shuffling (default: random)")
    p.add_argument("--no-matrix", action="store_true", help="skip the overhead matrix (marker test only)")
    p.add_argument("--no-markers", action="store_true", help="skip the marker-rate test")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up measurement (empty program)")
    p.add_argument(
        "--marker-rates",
        default=",".join(str(r) for r in DEFAULT_MARKER_RATES),
        help="target marker rates per second (default %(default)s)",
    )
    p.add_argument("--marker-seconds", type=float, default=1.0, help="seconds of markers per run (default 1.0)")
    p.add_argument("--marker-reps", type=int, default=3, help="repetitions per rate; all must be lossless (default 3)")
    p.add_argument(
        "--marker-readers", default="drain,live", help="readers for the marker test: drain, live (default both)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 1
        args.scale = min(args.scale, 0.25)
        args.marker_reps = 1
        args.marker_seconds = min(args.marker_seconds, 0.5)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    wanted = [v for v in args.variants.split(",") if v]
    unknown += [v for v in wanted if v not in VARIANT_NAMES]
    readers = [r for r in args.marker_readers.split(",") if r]
    unknown += [r for r in readers if r not in ("drain", "live")]
    if unknown:
        raise SystemExit(f"overhead: unknown workload, variant or reader: {', '.join(unknown)}")
    peers = any(v in wanted for v in ("py-spy", "pyinstrument"))
    venv = Path(args.venv) if args.venv else default_venv_dir(args.python)
    bench = ensure_venv(venv, args.python, peers)
    started = time.time()
    load0 = os.getloadavg()

    notes: List[str] = []
    auto = "native" if bench.native else "python"
    if not bench.native:
        notes.append(
            f"native leech: not available in the bench interpreter (`import lpm.leech.native`: {bench.native_note}); "
            "the lpm-native variant is skipped and `lpm run` defaults to the pure-Python leech."
        )
    variants: List[Variant] = []
    for v in VARIANTS:
        if v.name not in wanted:
            continue
        if v.name in ("lpm-native", "lpm-gil", "lpm-nosample", "lpm-walked") and not bench.native:
            continue
        if v.kind == "py-spy" and not bench.py_spy:
            notes.append("py-spy: not installed in the bench virtualenv; skipped.")
            continue
        if v.kind == "pyinstrument" and not bench.pyinstrument:
            notes.append("pyinstrument: not installed in the bench virtualenv; skipped.")
            continue
        variants.append(v)
    labels = {v.name: v.label.replace("{auto}", f": auto → {auto}") for v in [PLAIN, *VARIANTS]}
    for line in notes:
        note(line)

    rng = random.Random(args.seed)
    pairs: List[Pair] = []
    report: List[str] = []
    result: Dict[str, Any] = {"args": vars(args), "notes": notes}
    if not args.no_matrix and variants and workloads:
        note(
            f"matrix: {args.rounds} round(s) x {len(workloads)} workloads x {len(variants)} variants, "
            f"scale {args.scale:g}, bench python {bench.python}"
        )
        pairs = run_matrix(variants, workloads, bench, args.rounds, args.scale, rng)
        text, summary = summarize(pairs, variants, workloads, labels)
        report.append(text)
        result["summary"] = summary
        result["pairs"] = [
            {"round": p.round, "variant": p.variant, "workload": p.workload, "plain": asdict(p.plain), "tool": asdict(p.tool)}
            for p in pairs
        ]
    if not args.no_startup:
        lpm_variant = next(v for v in VARIANTS if v.name == "lpm")
        text, raw = measure_startup(bench, lpm_variant, 3 if args.quick else 7)
        report.append(text)
        result["startup"] = raw
    markers: List[MarkerRun] = []
    if not args.no_markers:
        impls = ["python"] + (["native"] if bench.native else [])
        rates = [int(float(r)) for r in args.marker_rates.split(",") if r]
        markers = run_markers(bench, impls, readers, rates, args.marker_reps, args.marker_seconds)
        text, best = summarize_markers(markers, rates)
        report.append(text)
        result["marker_best"] = best
        result["marker_runs"] = [dict(asdict(m), achieved=m.achieved, lossless=m.lossless) for m in markers]

    facts = machine_facts(bench)
    facts["loadavg_start"] = load0
    facts["loadavg_end"] = os.getloadavg()
    facts["minutes"] = round((time.time() - started) / 60, 1)
    result["machine"] = facts
    print("\n\n".join(report))
    print("\n## Notes\n")
    for line in notes:
        print(f"- {line}")
    print(
        "- Ratios within about ±10–15% of 1.00 are within this VM's noise (see the A/A row); "
        "each cell is over rounds of paired A B runs."
    )
    print("\n## Machine\n")
    print(
        f"- Python {facts['bench_python']} (bench venv {facts['venv']}); {facts.get('cpu_model', '?')}, "
        f"{facts['cpu_count']} CPUs, {facts.get('mem_total_kib', 0) / 1048576:.0f} GiB; {facts['platform']}"
    )
    print(
        f"- load average (1/5/15 min) at start {' '.join(f'{x:.2f}' for x in load0)}, "
        f"at end {' '.join(f'{x:.2f}' for x in facts['loadavg_end'])}; took {facts['minutes']} min"
    )
    print(f"- tools: {', '.join(f'{k} {v}' for k, v in bench.versions.items())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"- raw numbers: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

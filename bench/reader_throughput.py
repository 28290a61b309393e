#!/usr/bin/env python3
"""Reader throughput: lpm's eventlog reader against the ghc-events library.

The benchmark compiles a Haskell workload (``bench/haskell/EventStorm.hs``)
with ``-threaded -eventlog``, runs it with ``+RTS -l -N2`` until its eventlog
reaches the requested size, and then reads that real GHC eventlog several ways,
interleaving the repetitions so that drift in the machine hits every way alike:

``lpm scan``
    ``EventLogReader.count``: framing only, one count per event type.
``lpm full decode``
    ``EventLogReader.events()`` over every item: framing plus a decoded event
    object each.
``lpm raw framing``
    ``EventLogReader.next_raw``: framing plus a ``RawEvent`` holding the bytes.
``ghc-events whole``
    ``bench/haskell/GhcEventsCount.hs whole``: ``readEventLogFromFile`` and a
    strict fold that forces every event.
``ghc-events incremental``
    the same program fed 1 MiB chunks through ``GHC.RTS.Events.Incremental``.

lpm runs in this process (``time.perf_counter`` wall, ``time.process_time``
CPU); the lpm readers are fed chunks read from the file inside the timed
region, as the Haskell readers read theirs.  Haskell runs are separate
processes (wall time around ``subprocess.run``, CPU from
``resource.getrusage(RUSAGE_CHILDREN)``), so their times include process
start-up, which is measured on a tiny eventlog in every repetition and shown
next to them; the program also reports its own in-process decode time.

lpm counts block markers (id 18) as events; ghc-events consumes them while
decoding and never returns them, so its event count is lower by exactly their
number.  After timing, the per-type counts of every reader are compared (lpm's
type ids are named by lpm's event classes, whose names are the ghc-events
constructor names), and a separate untimed lpm decode checks timestamp and
capability checksums against ghc-events'.

It prints numbers and asserts nothing about speed.  MB means 10**6 bytes.

Example::

    python bench/reader_throughput.py --mb 50 --reps 5 --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from machine import cpu_model  # bench/machine.py, beside this script

BENCH_DIR = Path(__file__).resolve().parent
HASKELL_DIR = BENCH_DIR / "haskell"
REPO_ROOT = BENCH_DIR.parent

if importlib.util.find_spec("lpm") is None:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

import lpm  # noqa: E402
from lpm.eventlog import (  # noqa: E402

    EVENT_TYPES,
    NEED_DATA,
    Event,
    EventBlock,
    EventLogReader,
    RawEvent,
    UnknownEvent,
)

MB = 1_000_000
MIB = 1 << 20
BLOCK_MARKER_ID = EventBlock.ID
GENERATOR = "EventStorm"
GHC_READER = "GhcEventsCount"
GENERATOR_FLAGS = ["-O", "-threaded", "-eventlog", "-rtsopts"]
READER_FLAGS = ["-O2", "-rtsopts", "-package", "ghc-events"]

SCAN = "lpm-scan"
DECODE = "lpm-decode"
RAW = "lpm-raw"
HS_WHOLE = "ghc-events"
HS_INCREMENTAL = "ghc-events-inc"
ALL_MODES = [SCAN, DECODE, RAW, HS_WHOLE, HS_INCREMENTAL]
HASKELL_MODES = {HS_WHOLE: "whole", HS_INCREMENTAL: "incremental"}
TITLES = {
    SCAN: "lpm scan (count)",
    DECODE: "lpm full decode (events())",
    RAW: "lpm raw framing (next_raw)",
    HS_WHOLE: "ghc-events whole (readEventLogFromFile)",
    HS_INCREMENTAL: "ghc-events incremental (Decoder)",
}


class BenchError(Exception):
    """A step of the benchmark failed (compiler, workload, reader)."""


def note(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


# -- samples --------------------------------------------------------------------


@dataclass
class Sample:
    """One timed run of one reader."""

    wall: float
    cpu: float
    counts: Dict[str, int]  # events per type name
    events: int  # events as this reader counts them
    items: int = 0  # lpm's non-event items (header, data end, end of stream)
    self_ns: Optional[int] = None  # a Haskell reader's own decode time
    ts_sum: Optional[int] = None
    cap_sum: Optional[int] = None


@dataclass
class ModeResult:
    name: str
    samples: List[Sample] = field(default_factory=list)
    startup: List[Sample] = field(default_factory=list)  # Haskell: the tiny file

    @property
    def walls(self) -> List[float]:
        return [s.wall for s in self.samples]

    @property
    def median_wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def median_cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    @property
    def events(self) -> int:
        return self.samples[0].events

    @property
    def median_startup(self) -> Optional[float]:
        return statistics.median(s.wall for s in self.startup) if self.startup else None

    @property
    def median_self(self) -> Optional[float]:
        got = [s.self_ns for s in self.samples if s.self_ns is not None]
        return statistics.median(got) / 1e9 if got else None


def type_name(type_id: int) -> str:
    cls = EVENT_TYPES.get(type_id)
    return cls.__name__ if cls is not None else f"UnknownEvent#{type_id}"


def named(by_id: Dict[int, int]) -> Dict[str, int]:
    return {type_name(tid): n for tid, n in sorted(by_id.items())}


# -- lpm readers ----------------------------------------------------------------


def feed_file(path: Path, chunk: int, reader: EventLogReader, drain: Callable[[], None]) -> None:
    """Feed ``path`` to ``reader`` in ``chunk``-byte pieces, draining after each
    piece and once more after ``close``."""
    with open(path, "rb", buffering=0) as f:
        read = f.read
        feed = reader.feed
        while True:
            data = read(chunk)
            if not data:
                break
            feed(data)
            drain()
    reader.close()
    drain()


def lpm_scan(path: Path, chunk: int) -> Sample:
    reader = EventLogReader()
    by_id: Dict[int, int] = {}
    others: List[object] = []
    count = reader.count

    def drain() -> None:
        while True:
            got = count(by_id)
            if got is NEED_DATA:
                return
            others.append(got)

    wall, cpu = timed(lambda: feed_file(path, chunk, reader, drain))
    return Sample(wall, cpu, named(by_id), sum(by_id.values()), len(others))


def lpm_decode(path: Path, chunk: int) -> Sample:
    reader = EventLogReader()
    by_class: Dict[type, int] = {}
    unknown: Dict[int, int] = {}
    get = by_class.get

    def drain() -> None:
        for item in reader.events():
            cls = type(item)
            by_class[cls] = get(cls, 0) + 1
            if cls is UnknownEvent:
                tid = item.type_id  # type: ignore[union-attr]
                unknown[tid] = unknown.get(tid, 0) + 1

    wall, cpu = timed(lambda: feed_file(path, chunk, reader, drain))
    by_id: Dict[int, int] = dict(unknown)
    items = 0
    for cls, n in by_class.items():
        if not issubclass(cls, Event):
            items += n
        elif cls is not UnknownEvent:
            if cls.ID < 0:  # MalformedEvent cannot come from a strict reader
                raise BenchError(f"unexpected {cls.__name__} from a strict reader")
            by_id[cls.ID] = by_id.get(cls.ID, 0) + n
    return Sample(wall, cpu, named(by_id), sum(by_id.values()), items)


def lpm_raw(path: Path, chunk: int) -> Sample:
    reader = EventLogReader()
    by_id: Dict[int, int] = {}
    others: List[object] = []
    next_raw = reader.next_raw
    get = by_id.get

    def drain() -> None:
        while True:
            item = next_raw()
            if item is NEED_DATA:
                return
            if type(item) is RawEvent:
                tid = item.type_id
                by_id[tid] = get(tid, 0) + 1
            else:
                others.append(item)

    wall, cpu = timed(lambda: feed_file(path, chunk, reader, drain))
    return Sample(wall, cpu, named(by_id), sum(by_id.values()), len(others))


def lpm_checksums(path: Path, chunk: int) -> tuple[int, int]:
    """Timestamp and capability sums over every event but block markers, as
    GhcEventsCount computes them (untimed)."""
    reader = EventLogReader()
    sums = [0, 0]

    def drain() -> None:
        for item in reader.events():
            if isinstance(item, Event) and type(item) is not EventBlock:
                sums[0] += item.ts
                sums[1] += 0 if item.cap is None else item.cap + 1

    feed_file(path, chunk, reader, drain)
    return sums[0] % (1 << 64), sums[1]


def timed(run: Callable[[], None]) -> tuple[float, float]:
    c0 = time.process_time()
    t0 = time.perf_counter()
    run()
    t1 = time.perf_counter()
    c1 = time.process_time()
    return t1 - t0, c1 - c0


LPM_RUNNERS: Dict[str, Callable[[Path, int], Sample]] = {SCAN: lpm_scan, DECODE: lpm_decode, RAW: lpm_raw}


# -- Haskell programs -------------------------------------------------------------


def ghc_version(ghc: str) -> str:
    return run_text([ghc, "--numeric-version"]).strip()


def run_text(cmd: Sequence[str]) -> str:
    proc = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def build(ghc: str, name: str, flags: List[str], workdir: Path, version: str) -> Path:
    """Compile ``bench/haskell/<name>.hs`` into ``workdir``, reusing a binary
    built from the same source, flags and compiler."""
    source = HASKELL_DIR / f"{name}.hs"
    digest = hashlib.sha256()
    digest.update(source.read_bytes())
    digest.update(" ".join(flags + [version]).encode())
    tag = digest.hexdigest()[:12]
    binary = workdir / "bin" / f"{name}-{tag}"
    if binary.exists():
        note(f"reusing {binary}")
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    note(f"compiling {source.name} ({' '.join(flags)})")
    outdir = workdir / "build" / f"{name}-{tag}"
    run_text([ghc, "--make", "-v0", *flags, "-outputdir", str(outdir), "-o", str(binary), str(source)])
    return binary


def generate(generator: Path, target: Path, size: int) -> float:
    """Run the workload until its eventlog reaches ``size`` bytes; returns the
    seconds it took.  The log is written under a temporary name and renamed
    when complete, so a killed run never leaves a log that looks reusable."""
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        partial.unlink()
    cmd = [str(generator), str(partial), str(size), "+RTS", "-l", f"-ol{partial}", "-N2", "-RTS"]
    t0 = time.perf_counter()
    run_text(cmd)
    took = time.perf_counter() - t0
    os.replace(partial, target)
    return took


def run_ghc_events(reader: Path, mode: str, path: Path, chunk: int) -> Sample:
    cmd = [str(reader), mode, str(path)]
    if mode == "incremental":
        cmd.append(str(chunk))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    counts: Dict[str, int] = {}
    facts: Dict[str, int] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "type":
            counts[parts[1]] = int(parts[2])
        elif len(parts) == 2:
            facts[parts[0]] = int(parts[1])
    if "total" not in facts or sum(counts.values()) != facts["total"]:
        raise BenchError(f"cannot make sense of the output of {' '.join(cmd)}:\n{proc.stdout}")
    return Sample(
        wall,
        cpu,
        counts,
        facts["total"],
        self_ns=facts.get("decode_ns"),
        ts_sum=facts.get("ts_sum"),
        cap_sum=facts.get("cap_sum"),
    )


# -- machine ------------------------------------------------------------------------


def machine_facts(ghc: Optional[str]) -> Dict[str, Any]:
    facts: Dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "lpm": lpm.__version__,
    }
    model = cpu_model()
    if model is not None:
        facts["cpu_model"] = model
    if hasattr(os, "getloadavg"):
        facts["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if ghc is not None:
        try:
            facts["ghc"] = ghc_version(ghc)
            pkg = shutil.which("ghc-pkg")
            if pkg is not None:
                facts["ghc_events"] = run_text([pkg, "field", "ghc-events", "version", "--simple-output"]).strip()
        except (BenchError, OSError):
            pass
    return facts


# -- reporting ----------------------------------------------------------------------


def fmt_rate(events: int, seconds: float) -> str:
    return f"{events / seconds / 1e6:.3f}" if seconds > 0 else "-"


def fmt_mbs(size: int, seconds: float) -> str:
    return f"{size / MB / seconds:.1f}" if seconds > 0 else "-"


def table(rows: List[List[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def compare_counts(lpm_counts: Dict[str, int], hs_counts: Dict[str, int]) -> Dict[str, List[int]]:
    """Differences as name -> [lpm, ghc-events], block markers left out."""
    mine = {k: v for k, v in lpm_counts.items() if k != type_name(BLOCK_MARKER_ID)}
    diff: Dict[str, List[int]] = {}
    for name in sorted(set(mine) | set(hs_counts)):
        a, b = mine.get(name, 0), hs_counts.get(name, 0)
        if a != b:
            diff[name] = [a, b]
    return diff


def report(
    results: Dict[str, ModeResult], size: int, facts: Dict[str, Any], out: Dict[str, Any]
) -> None:
    rows = [["reader", "events", "wall s med", "min-max", "CPU s", "Mev/s", "MB/s"]]
    modes_out: Dict[str, Any] = {}
    for name, res in results.items():
        med = res.median_wall
        rows.append(
            [
                TITLES[name],
                f"{res.events:,}",
                f"{med:.3f}",
                f"{min(res.walls):.3f}-{max(res.walls):.3f}",
                f"{res.median_cpu:.3f}",
                fmt_rate(res.events, med),
                fmt_mbs(size, med),
            ]
        )
        entry: Dict[str, Any] = {
            "events": res.events,
            "wall_s": res.walls,
            "cpu_s": [s.cpu for s in res.samples],
            "median_wall_s": med,
            "events_per_s": res.events / med,
            "mb_per_s": size / MB / med,
        }
        startup = res.median_startup
        if startup is not None:
            net = med - startup
            rows.append(
                [
                    "  - minus start-up (tiny-file run)",
                    "",
                    f"{net:.3f}",
                    "",
                    "",
                    fmt_rate(res.events, net),
                    fmt_mbs(size, net),
                ]
            )
            entry["startup_wall_s"] = [s.wall for s in res.startup]
            entry["startup_cpu_s"] = [s.cpu for s in res.startup]
            entry["median_startup_wall_s"] = startup
        inproc = res.median_self
        if inproc is not None:
            rows.append(
                [
                    "  - own in-process decode time",
                    "",
                    f"{inproc:.3f}",
                    "",
                    "",
                    fmt_rate(res.events, inproc),
                    fmt_mbs(size, inproc),
                ]
            )
            entry["self_s"] = [s.self_ns / 1e9 for s in res.samples if s.self_ns is not None]
            entry["median_self_s"] = inproc
        modes_out[name] = entry
    out["modes"] = modes_out
    print()
    print(table(rows))
    for name, res in results.items():
        if res.startup:
            s = res.startup
            print(
                f"start-up of {TITLES[name]} on a {out['tiny_bytes']:,}-byte log: "
                f"median {statistics.median(x.wall for x in s) * 1e3:.1f} ms wall, "
                f"{statistics.median(x.cpu for x in s) * 1e3:.1f} ms CPU"
            )

    ratios: Dict[str, float] = {}

    def ratio(key: str, slow: str, fast: str, text: str, fast_time: Optional[float] = None) -> None:
        if slow in results and fast in results:
            t_fast = results[fast].median_wall if fast_time is None else fast_time
            value = results[slow].median_wall / t_fast
            ratios[key] = value
            print(f"  {value:6.2f}x  {text}")

    print()
    print("ratios of median wall time (same file, so time ratios compare the same work):")
    ratio("decode_over_scan", DECODE, SCAN, "lpm full decode / lpm scan")
    ratio("raw_over_scan", RAW, SCAN, "lpm raw framing / lpm scan")
    ratio("decode_over_raw", DECODE, RAW, "lpm full decode / lpm raw framing")
    ratio("decode_over_ghc_events", DECODE, HS_WHOLE, "lpm full decode / ghc-events whole (process wall)")
    if HS_WHOLE in results:
        own = results[HS_WHOLE].median_self
        if own:
            ratio(
                "decode_over_ghc_events_inproc",
                DECODE,
                HS_WHOLE,
                "lpm full decode / ghc-events whole (its own decode time)",
                own,
            )
    ratio(
        "decode_over_ghc_events_inc", DECODE, HS_INCREMENTAL, "lpm full decode / ghc-events incremental (process wall)"
    )
    ratio("scan_over_ghc_events", SCAN, HS_WHOLE, "lpm scan / ghc-events whole (process wall)")
    out["ratios"] = ratios

    print()
    print("machine:")
    for key, value in facts.items():
        if value is not None:
            print(f"  {key}: {value}")


# -- main ---------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="reader_throughput.py",
        description=(
            "Benchmark lpm's eventlog reader (scan, full decode, raw framing) against the ghc-events "
            "Haskell library on a large real GHC eventlog made by a compiled workload.  Prints numbers; "
            "asserts nothing about speed.  MB = 10**6 bytes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--mb",
        type=float,
        default=64.0,
        help="target eventlog size in MB (the runtime flushes ~2 MB blocks, so it overshoots a little)",
    )
    add(
        "--workdir",
        type=Path,
        default=None,
        help="directory for builds and eventlogs, kept and reused across runs (an eventlog made for the same "
        "--mb is reused); default: a temporary directory, removed afterwards",
    )
    add("--reps", type=int, default=5, help="interleaved repetitions of every reader")
    add("--chunk", type=int, default=MIB, help="bytes per feed() for lpm and per read for ghc-events incremental")
    add("--modes", default=",".join(ALL_MODES), help=f"comma-separated readers to run, from: {', '.join(ALL_MODES)}")
    add("--ghc", default="ghc", help="the GHC compiler to build the workload and the ghc-events reader with")
    add("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON to FILE")
    add(
        "--no-verify",
        action="store_true",
        help="skip the untimed lpm decode that checks timestamp and capability checksums against ghc-events",
    )
    add(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after timing, run each lpm reader once under cProfile and print the top N functions by own time",
    )
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ALL_MODES]
    if bad or not modes:
        parser.error(f"unknown mode(s) {bad}; choose from {ALL_MODES}")
    args.modes = modes
    if args.reps < 1 or args.chunk < 1 or args.mb < 0:
        parser.error("--reps and --chunk must be positive and --mb not negative")
    return args


def profile(path: Path, chunk: int, top: int) -> None:
    import cProfile
    import pstats

    for name in (SCAN, DECODE, RAW):
        prof = cProfile.Profile()
        prof.enable()
        LPM_RUNNERS[name](path, chunk)
        prof.disable()
        print()
        print(f"cProfile of {TITLES[name]}, top {top} by own time (profiling inflates times):")
        print("(every dataclass __init__ is labelled <string>:2(__init__), and pstats keeps only one of them;")
        print(" their cost shows in the cumulative time of the decoder closures that call them)")
        stats = pstats.Stats(prof, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(top)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    own_dir = args.workdir is None
    workdir: Path = Path(tempfile.mkdtemp(prefix="lpm-bench-")) if own_dir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return bench(args, workdir.resolve())
    except BenchError as err:
        print(f"reader_throughput: {err}", file=sys.stderr)
        return 1
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def bench(args: argparse.Namespace, workdir: Path) -> int:
    modes: List[str] = args.modes
    size_target = int(args.mb * MB)
    log = workdir / f"storm-{args.mb:g}MB.eventlog"
    tiny = workdir / "tiny.eventlog"
    need_hs = any(m in HASKELL_MODES for m in modes)
    need_ghc = need_hs or not log.exists() or not tiny.exists()
    ghc: Optional[str] = None
    version = ""
    if need_ghc:
        ghc = shutil.which(args.ghc)
        if ghc is None:
            raise BenchError(f"{args.ghc!r} not found; it is needed to build the workload and the ghc-events reader")
        version = ghc_version(ghc)
    facts = machine_facts(ghc)
    config = {"reps": args.reps, "chunk": args.chunk, "modes": modes, "mb": args.mb}
    out: Dict[str, Any] = {"machine": facts, "config": config}

    generate_s: Optional[float] = None
    if not (log.exists() and tiny.exists()):
        assert ghc is not None
        generator = build(ghc, GENERATOR, GENERATOR_FLAGS, workdir, version)
        if not log.exists():
            note(f"generating a ~{args.mb:g} MB eventlog at {log} (+RTS -l -N2)")
            generate_s = generate(generator, log, size_target)
            note(f"  took {generate_s:.1f} s")
        if not tiny.exists():
            generate(generator, tiny, 0)
    else:
        note(f"reusing {log}")
    size = log.stat().st_size
    out["eventlog"] = {"path": str(log), "bytes": size, "generate_s": generate_s}
    out["tiny_bytes"] = tiny.stat().st_size
    reader_bin: Optional[Path] = None
    if need_hs:
        assert ghc is not None
        reader_bin = build(ghc, GHC_READER, READER_FLAGS, workdir, version)

    # Warm the page cache so that the first reader does not pay for the disk.
    with open(log, "rb") as f:
        while f.read(16 * MIB):
            pass

    results: Dict[str, ModeResult] = {m: ModeResult(m) for m in modes}
    note(f"reading {size / MB:.1f} MB, {args.reps} interleaved repetitions of {', '.join(modes)}")
    for rep in range(args.reps):
        order = modes[rep % len(modes) :] + modes[: rep % len(modes)]
        for mode in order:
            res = results[mode]
            if mode in HASKELL_MODES:
                assert reader_bin is not None
                res.startup.append(run_ghc_events(reader_bin, HASKELL_MODES[mode], tiny, args.chunk))
                sample = run_ghc_events(reader_bin, HASKELL_MODES[mode], log, args.chunk)
            else:
                sample = LPM_RUNNERS[mode](log, args.chunk)
            res.samples.append(sample)
            note(f"  rep {rep + 1}/{args.reps} {mode:15} {sample.wall:8.3f} s  {sample.events:,} events")

    made = f", generated in {generate_s:.1f} s" if generate_s else ", reused"
    print(f"eventlog: {log.name}, {size:,} bytes ({size / MB:.1f} MB){made}")
    ok = check_counts(results, out)
    if not args.no_verify and reader_bin is not None:
        ok = verify_checksums(results, log, args.chunk, out) and ok
    report(results, size, facts, out)
    if args.profile > 0:
        profile(log, args.chunk, args.profile)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
        note(f"wrote {args.json}")
    return 0 if ok else 2


def check_counts(results: Dict[str, ModeResult], out: Dict[str, Any]) -> bool:
    """Every run of a reader must count the same; lpm must agree with ghc-events."""
    ok = True
    for res in results.values():
        first = res.samples[0].counts
        for n, s in enumerate(res.samples[1:], 2):
            if s.counts != first:
                print(f"WARNING: {res.name} run {n} counted differently from run 1")
                ok = False
    lpm_modes = [m for m in (SCAN, DECODE, RAW) if m in results]
    hs_modes = [m for m in HASKELL_MODES if m in results]
    base = lpm_modes[0] if lpm_modes else None
    for m in lpm_modes[1:]:
        if results[m].samples[0].counts != results[lpm_modes[0]].samples[0].counts:
            print(f"WARNING: {m} counts differ from {lpm_modes[0]}")
            ok = False
    counts_out: Dict[str, Any] = {}
    if base is not None:
        lc = results[base].samples[0].counts
        markers = lc.get(type_name(BLOCK_MARKER_ID), 0)
        counts_out["lpm"] = lc
        counts_out["lpm_block_markers"] = markers
        print(
            f"lpm: {sum(lc.values()):,} events in {len(lc)} types, {markers:,} of them block markers (id 18), "
            f"plus {results[base].samples[0].items} non-event items (header, data end, end of stream)"
        )
        for m in hs_modes:
            hc = results[m].samples[0].counts
            counts_out[m] = hc
            diff = compare_counts(lc, hc)
            counts_out[f"{m}_differences"] = diff
            if diff:
                ok = False
                print(f"COUNTS DIFFER: lpm vs {m} (name: lpm, ghc-events): {diff}")
            else:
                print(
                    f"counts match: lpm per-type counts without block markers equal {m}'s "
                    f"({sum(hc.values()):,} events in {len(hc)} constructors; lpm has {markers:,} more = block markers)"
                )
    out["counts"] = counts_out
    return ok


def verify_checksums(results: Dict[str, ModeResult], log: Path, chunk: int, out: Dict[str, Any]) -> bool:
    hs = [results[m].samples[0] for m in HASKELL_MODES if m in results]
    if not hs:
        return True
    note("untimed lpm decode for timestamp and capability checksums")
    ts, caps = lpm_checksums(log, chunk)
    ok = all(s.ts_sum == ts and s.cap_sum == caps for s in hs)
    out["checksums"] = {"lpm": [ts, caps], "ghc-events": [[s.ts_sum, s.cap_sum] for s in hs], "match": ok}
    if ok:
        print(f"checksums match: sum of timestamps {ts} (mod 2^64) and of capabilities+1 {caps}, lpm = ghc-events")
    else:
        print(f"CHECKSUMS DIFFER: lpm (ts, cap) = ({ts}, {caps}); ghc-events = {[(s.ts_sum, s.cap_sum) for s in hs]}")
    return ok


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Leech overhead by counting work: instructions under callgrind, not seconds.

``bench/overhead.py`` times the five workloads with and without the leech; on a
shared 2-vCPU VM its A/A pairs spread by 10-15%, far wider than the 2% the
leech is allowed.  This bench counts instead, so a 0.5% change shows:

1. Each workload runs under ``valgrind --tool=callgrind --separate-threads=yes``
   at two scales, ``s`` and ``2s``, plain and under ``lpm run`` (native and
   Python leech, a reader here draining the FIFO).  The hot section's
   instructions are the difference between the two runs (interpreter and
   leech start-up cancel out), per thread.
2. The program's own threads (the main thread and any the workload starts) are
   compared with the plain run's: what the leech's GC callback, user-API
   hooks and the objects it keeps alive (walked by every full collection) cost
   the program where it runs.
3. The leech's own threads (``lpm-monitor``; for the Python leech also its
   writer) hold the GIL while they work, so the program waits for them.  Their
   work is driven by the clock (samples at 100 Hz, thread scans, heap figures,
   flushes), and under valgrind the clock runs ~50 times faster than the
   program, so it is counted per sample tick: their hot instructions over the
   hot ticks (samples of the main thread in the stream; valgrind runs with
   ``--fair-sched=yes`` so the monitor gets the GIL when it asks), times the
   default 100 ticks per second, over the program's instructions per native
   second (plain hot instructions over the plain hot seconds timed here
   outside valgrind, median of 3), is the share of the program's time they
   take.  Slower work (scans, heap figures) is charged to every tick, which
   overstates it.  The native writer and the native background sampler are
   pthreads that never take the GIL: their share (instructions per tick the
   same way) is shown apart, as CPU another core spends.  With the
   background sampler the monitor thread wakes only at the scan rate, so its
   GIL share is mostly scans and heap figures.

The estimate is ``program ratio + leech GIL share``; the target is at most
1.02.  Instruction counts repeat to a fraction of a percent; the native
seconds in the denominator of the GIL share are the only timed figure, and
they scale a share that is itself small.

Usage::

    python bench/overhead_count.py                     # every workload, ~6 minutes
    python bench/overhead_count.py --workloads gc,calls --scale 0.1
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from machine import cpu_model  # noqa: E402
from overhead import WORKLOAD_DIR, WORKLOADS, FifoDrain, child_env, run_child  # noqa: E402

from lpm.eventlog import events as ev  # noqa: E402
from lpm.eventlog import read_events  # noqa: E402

VARIANTS = {"plain": None, "native": "native", "python": "python"}
_HOT = re.compile(rb"^BENCH_ELAPSED ([0-9.eE+-]+)\s*$", re.M)
_TOTALS = re.compile(r"^(?:totals|summary): (\d+)", re.M)


@dataclass
class Counted:
    """One run under callgrind."""

    hot_seconds: float  # the workload's own timing of its hot section (under valgrind)
    threads: Dict[int, int]  # callgrind thread number -> instructions
    nogil_threads: List[int] = field(default_factory=list)  # the native writer and sampler pthreads, by function name
    samples: int = 0  # PySample events of the main thread in the stream


@dataclass
class Row:
    workload: str
    variant: str
    program: float  # program threads' hot instructions
    leech_gil: float  # the leech's GIL-holding threads, instructions per sample tick
    leech_nogil: float  # the native writer and sampler, instructions per sample tick
    sample_rate: float  # achieved under valgrind: main-thread samples per second of hot wall time
    extra: Dict[str, float] = field(default_factory=dict)


def callgrind(variant: str, workload: str, scale: float, python: str, scratch: str) -> Counted:
    script = WORKLOAD_DIR / WORKLOADS[workload]
    out_dir = tempfile.mkdtemp(prefix="cg-", dir=scratch)
    lpm_dir = tempfile.mkdtemp(prefix="dir-", dir=scratch)
    impl = VARIANTS[variant]
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        "--fair-sched=yes",  # else the monitor thread waits ~1 s for the GIL under valgrind
        f"--callgrind-out-file={out_dir}/cg.%p",
        python,
    ]
    cmd += [str(script)] if impl is None else ["-m", "lpm", "run", "--implementation", impl, str(script)]
    # A fixed hash seed: set and dict layouts, and so instruction counts, repeat.
    env = child_env({"LPM_BENCH_SCALE": repr(scale), "LPM_DIR": lpm_dir, "PYTHONHASHSEED": "0"})
    exited = threading.Event()
    drain = FifoDrain(lpm_dir, exited, keep=True) if impl is not None else None
    code, _wall, _usage, stdout, stderr = run_child(cmd, env, scratch, drain, exited)
    hot = _HOT.search(stdout)
    if code != 0 or hot is None:
        tail = " | ".join(stderr.decode("utf-8", "replace").strip().splitlines()[-4:])
        raise SystemExit(f"overhead_count: {variant} {workload} failed (exit {code}): {tail}")
    counted = Counted(float(hot.group(1)), {})
    for path in glob.glob(f"{out_dir}/cg.*-*"):
        number = int(path.rsplit("-", 1)[1])
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        totals = _TOTALS.search(text)
        counted.threads[number] = int(totals.group(1)) if totals else 0
        if "writer_main" in text or "sampler_main" in text:
            counted.nogil_threads.append(number)
    if drain is not None:
        drain.join(timeout=30)
        main_thread = None
        for item in read_events(bytes(drain.data)):
            if isinstance(item, ev.ThreadLabel) and item.label == "MainThread":
                main_thread = item.thread
            elif isinstance(item, ev.PySample) and item.thread == main_thread:
                counted.samples += 1
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(lpm_dir, ignore_errors=True)
    return counted


def native_hot_seconds(workload: str, scale: float, python: str, scratch: str, reps: int) -> float:
    """Median hot seconds of the plain workload at ``scale``, outside valgrind."""
    times = []
    for _ in range(reps):
        env = child_env({"LPM_BENCH_SCALE": repr(scale)})
        code, _, _, stdout, _ = run_child([python, str(WORKLOAD_DIR / WORKLOADS[workload])], env, scratch, None, threading.Event())
        hot = _HOT.search(stdout)
        if code != 0 or hot is None:
            raise SystemExit(f"overhead_count: plain {workload} failed natively (exit {code})")
        times.append(float(hot.group(1)))
    return statistics.median(times)


def leech_threads(counted: Counted, variant: str) -> List[int]:
    """The leech's threads, all started before the program's code runs: the
    native leech's pthreads (found by name) and its monitor (2 or 3, after
    the writer); the Python leech's writer and monitor (2 and 3)."""
    python_threads = [n for n in (2, 3) if n in counted.threads and n not in counted.nogil_threads]
    return [*counted.nogil_threads, *(python_threads if variant == "python" else python_threads[:1])]


def measure(workload: str, variant: str, scale: float, python: str, scratch: str) -> Row:
    small = callgrind(variant, workload, scale, python, scratch)
    big = callgrind(variant, workload, 2 * scale, python, scratch)
    own = set(leech_threads(big, variant)) if variant != "plain" else set()

    def program(c: Counted) -> int:
        return sum(n for t, n in c.threads.items() if t not in own)

    seconds = big.hot_seconds - small.hot_seconds
    ticks = big.samples - small.samples
    if variant != "plain" and ticks <= 0:
        raise SystemExit(f"overhead_count: {variant} {workload}: no more samples at scale {2 * scale} than at {scale}")
    gil = nogil = 0.0
    for t in own:
        delta = big.threads.get(t, 0) - small.threads.get(t, 0)
        if t in big.nogil_threads:
            nogil += delta / ticks
        else:
            gil += delta / ticks
    rate = ticks / seconds if variant != "plain" else 0.0
    return Row(workload, variant, float(program(big) - program(small)), gil, nogil, rate)


#: The default sample rate: ticks per second the per-tick costs are charged at.
RATE = 100


def report(rows: List[Row], native_ips: Dict[str, float]) -> str:
    lines = [
        "| workload | leech | program threads | + leech threads holding the GIL | = estimate | "
        "native writer and sampler (another core) | leech instructions per tick | samples/s under valgrind |",
        "|---|---|---|---|---|---|---|---|",
    ]
    plain = {r.workload: r for r in rows if r.variant == "plain"}
    for r in rows:
        if r.variant == "plain":
            continue
        base = plain[r.workload]
        ips = native_ips[r.workload]
        ratio = r.program / base.program
        gil = r.leech_gil * RATE / ips
        nogil = r.leech_nogil * RATE / ips
        r.extra = {"program_ratio": ratio, "gil_share": gil, "estimate": ratio + gil, "nogil_share": nogil}
        lines.append(
            f"| {r.workload} | {r.variant} | {ratio:.4f} | {100 * gil:.2f}% | **{ratio + gil:.4f}** | "
            f"{100 * nogil:.2f}% of a core | {r.leech_gil + r.leech_nogil:,.0f} | {r.sample_rate:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated (default: all five)")
    parser.add_argument("--variants", default="native,python", help="leeches to measure (default native,python)")
    parser.add_argument("--scale", type=float, default=0.2, help="the smaller scale s (default 0.2; 2s is also run)")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run (default: this one)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON here too")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("overhead_count: valgrind is not installed (Debian: apt-get install valgrind)")
    workloads = [w for w in args.workloads.split(",") if w]
    variants = [v for v in args.variants.split(",") if v]
    unknown = [w for w in workloads if w not in WORKLOADS] + [v for v in variants if v not in VARIANTS or v == "plain"]
    if unknown:
        raise SystemExit(f"overhead_count: unknown workload or variant: {', '.join(unknown)}")
    print(f"# overhead by instruction counts: python {args.python}, CPU {cpu_model()}", flush=True)
    rows: List[Row] = []
    native_ips: Dict[str, float] = {}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="lpm-count-") as scratch:
        for workload in workloads:
            for variant in ["plain", *variants]:
                print(f"  {workload} {variant} ... ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
                rows.append(measure(workload, variant, args.scale, args.python, scratch))
            seconds = native_hot_seconds(workload, 2 * args.scale, args.python, scratch, 3) - native_hot_seconds(
                workload, args.scale, args.python, scratch, 3
            )
            base = next(r for r in rows if r.workload == workload and r.variant == "plain")
            native_ips[workload] = base.program / seconds
    print(report(rows, native_ips))
    print("\n(program instructions per native second: "
          + ", ".join(f"{w} {ips / 1e9:.2f} G" for w, ips in native_ips.items()) + ")")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": [r.__dict__ for r in rows], "native_ips": native_ips}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

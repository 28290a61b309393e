#!/usr/bin/env python3
"""The cost of one event on the program's own thread: lpm.marker() and friends.

Two ways, both counting work rather than trusting one stopwatch reading:

``time``
    In one process, interleaved rounds of N calls each for: the no-leech path
    (lpm not started: one global lookup), the pure-Python leech and the native
    leech (when it is built).  Each round reads ``time.thread_time_ns`` around
    the loop; the table shows the median ns per call over the rounds and the
    ratio to the no-leech path.  A reader drains the FIFO in another process
    so that buffers are recycled, as in real use.

``callgrind``
    ``valgrind --tool=callgrind`` runs a child Python twice per leech, with
    N and 2N calls, and reports (Ir(2N) - Ir(N)) / N: the instructions one call
    costs, repeatable to the instruction whatever else the machine does.

Usage: ``python bench/hot_path.py [--calls N] [--rounds R] [--mode time|callgrind|both]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent

CALLS: Dict[str, str] = {
    "marker": 'lpm.marker("m")',
    "message": 'lpm.message("a message of some length")',
    "counter": 'lpm.counter("c", 1.5)',
    "span": 'lpm.span("s").__enter__().__exit__(None, None, None)',
}


def implementations() -> List[str]:
    found = ["none", "python"]
    probe = subprocess.run([sys.executable, "-c", "import lpm.leech.native"], capture_output=True, cwd=ROOT)
    if probe.returncode == 0:
        found.append("native")
    else:
        print("note: the native leech is not built here; measuring the Python one only", file=sys.stderr)
    return found


CHILD = r"""
import os, sys, time, json, threading
import lpm
from lpm.leech.paths import open_reader
impl, calls, rounds, what = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if impl != "none":
    leech = lpm.start(implementation=impl, sample_rate=0, heap_interval=0)
    def drain():
        with open(open_reader(leech.data_path), "rb", buffering=0) as f:
            while f.read(1 << 16):
                pass
    threading.Thread(target=drain, daemon=True).start()
    time.sleep(0.1)
body = compile("for _ in range(%d):\n    %s\n" % (calls, what), "<bench>", "exec")
per_call = []
for _ in range(rounds):
    t0 = time.thread_time_ns()
    exec(body, {"lpm": lpm})
    per_call.append((time.thread_time_ns() - t0) / calls)
print(json.dumps(per_call))
"""


def run_time(calls: int, rounds: int, impls: List[str]) -> Dict[str, Dict[str, List[float]]]:
    """ns per call, per call kind and implementation; implementations interleave per round."""
    results: Dict[str, Dict[str, List[float]]] = {}
    for name, what in CALLS.items():
        results[name] = {impl: [] for impl in impls}
        for _ in range(rounds):
            for impl in impls:
                with tempfile.TemporaryDirectory() as d:
                    os.chmod(d, 0o700)
                    env = dict(os.environ, LPM_DIR=d)
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, impl, str(calls), "3", what],
                        capture_output=True,
                        env=env,
                        cwd=ROOT,
                        timeout=600,
                    )
                    if out.returncode != 0:
                        raise SystemExit(f"{impl}/{name} failed: {out.stderr.decode()}")
                    results[name][impl].append(min(json.loads(out.stdout)))
    return results


CG_CHILD = r"""
import sys, lpm
impl, calls, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if impl != "none":
    lpm.start(implementation=impl, sample_rate=0, heap_interval=0, budget=64 << 20)
exec(compile("for _ in range(%d):\n    %s\n" % (calls, what), "<bench>", "exec"), {"lpm": lpm})
"""


def instructions(impl: str, calls: int, what: str, out_dir: Path) -> int:
    out_file = out_dir / f"cg-{impl}-{calls}.out"
    env = dict(os.environ, LPM_DIR=str(out_dir / "lpm"), PYTHONHASHSEED="0")
    (out_dir / "lpm").mkdir(mode=0o700, exist_ok=True)
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", sys.executable, "-c", CG_CHILD, impl, str(calls), what],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=1800,
        check=True,
    )
    for line in out_file.read_text().splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no instruction total in {out_file}")


def run_callgrind(calls: int, impls: List[str]) -> Dict[str, Dict[str, float]]:
    results: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        for name, what in CALLS.items():
            results[name] = {}
            for impl in impls:
                once = instructions(impl, calls, what, Path(d))
                twice = instructions(impl, 2 * calls, what, Path(d))
                results[name][impl] = (twice - once) / calls
    return results


def table(title: str, rows: Dict[str, Dict[str, float]], unit: str, impls: List[str]) -> None:
    print(f"\n{title}")
    print(f"{'call':10s}" + "".join(f"{impl:>18s}" for impl in impls))
    for name, by_impl in rows.items():
        base = by_impl.get("none") or 1.0
        cells = []
        for impl in impls:
            v = by_impl[impl]
            cells.append(f"{v:10.0f} {unit} " + (f"{v / base:4.1f}x" if impl != "none" else "     "))
        print(f"{name:10s}" + "".join(f"{c:>18s}" for c in cells))


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000, help="calls per round (default 200000)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds for --mode time (default 7)")
    parser.add_argument("--mode", choices=["time", "callgrind", "both"], default="both")
    parser.add_argument("--json", metavar="FILE", help="write the raw numbers here too")
    args = parser.parse_args(argv)
    impls = implementations()
    report: Dict[str, object] = {"python": platform.python_version(), "cpus": os.cpu_count(), "calls": args.calls}
    if args.mode in ("time", "both"):
        raw = run_time(args.calls, args.rounds, impls)
        medians = {name: {impl: statistics.median(v) for impl, v in by.items()} for name, by in raw.items()}
        table(f"thread CPU ns per call, median of {args.rounds} interleaved rounds (best of 3 loops each)", medians, "ns", impls)
        report["time"] = raw
    if args.mode in ("callgrind", "both"):
        if shutil.which("valgrind") is None:
            print("\nvalgrind is not installed (apt-get install valgrind): skipping instruction counts")
        else:
            calls = max(1000, args.calls // 20)
            counts = run_callgrind(calls, impls)
            table(f"instructions per call (callgrind, {calls} vs {2 * calls} calls)", counts, "Ir", impls)
            report["callgrind"] = counts
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

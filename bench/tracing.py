#!/usr/bin/env python3
"""Call tracing: what ``lpm run --trace`` costs, next to the interpreter's floor and peers.

With ``--what allocs``: what ``lpm run --alloc`` costs (with its sampled stacks, and
counters only), next to ``python -X tracemalloc=1`` and ``memray run``, on
``bench/workloads/alloc_gc.py``.

The workload is ``bench/workloads/calls.py`` (recursive fib and a small
object/method scheduler: a call every few bytecodes), timed around its hot
section (``BENCH_ELAPSED``).  Variants, all run side by side in one invocation
per Python version:

``plain``      the program alone: every ratio's denominator
``floor``      ``lpm run`` with tracing in its "floor" mode: the same hooks lpm
               installs (a C profile function in every thread before 3.12,
               sys.monitoring with C callbacks from 3.12) doing nothing, which is
               what the interpreter charges any tracer before it does any work
``lpm``        ``lpm run --trace --sample-rate 0``: every call and return of Python
               and C functions streamed, with a reader here draining the FIFO;
               the calls that reached it and the loss reports are counted (a run
               that lost events did less work, so it would flatter lpm: the
               budget for tracing is 64 MiB, and any loss is shown)
``lpm-python`` the same with the pure-Python leech (``--python-leech``)
``cprofile``   ``python -m cProfile -o OUT``
``yappi``      yappi with builtins, CPU clock, from start to end
``viztracer``  ``python -m viztracer`` (its default ring buffer, written at exit)
``memray``     ``python -m memray run`` (allocations with their Python stacks)

Method (``shared/reference/baseline-measurements.md``): every round runs the
variants in a shuffled order, each right after a plain run of its own (A B A
B ...); a cell is the median over rounds of the variant's hot time over its
paired plain hot time, with min-max, and the same for CPU time (user+sys from
``os.wait4``).  "over floor" divides lpm's ratio by the floor's in the same
round: the target of issue 9 is at most 1.10.

Peers live in a bench virtualenv per Python (``--venv-dir``, default
``$XDG_CACHE_HOME/lpm-bench``), made here and filled with pip; lpm runs from
this checkout (``PYTHONPATH``), its native library built for that Python with
``pip install -e`` when it is missing.  Run with ``--python`` once per version:

    python bench/tracing.py --python ~/.pyenv/versions/3.11.7/bin/python3.11 \\
        --python ~/.pyenv/versions/3.13.*/bin/python3.13 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # this checkout's lpm
from lpm.eventlog.events import PyCall, PyDataLoss  # noqa: E402
from lpm.eventlog.reader import NEED_DATA, EventLogReader  # noqa: E402
from overhead import _FLOAT, REPO_ROOT, WORKLOAD_DIR, FifoDrain, child_env, med_range, note, run_child, table  # noqa: E402

PEERS = ["yappi", "viztracer", "memray"]
VARIANTS = ["floor", "lpm", "lpm-python", "cprofile", "yappi", "viztracer", "memray"]
#: --what allocs: allocation tracking on an allocation-heavy workload.
ALLOC_VARIANTS = ["alloc-floor", "lpm-alloc", "lpm-alloc-nosample", "tracemalloc", "memray"]
WORKLOADS = {"calls": WORKLOAD_DIR / "calls.py", "allocs": WORKLOAD_DIR / "alloc_gc.py"}
WORKLOAD = WORKLOADS["calls"]
YAPPI = (
    "import os, runpy, sys, yappi; sys.path.insert(0, os.path.dirname(sys.argv[1])); "
    "yappi.set_clock_type('cpu'); yappi.start(builtins=True); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); yappi.stop()"
)


@dataclass
class Env:
    python: str
    version: str
    peers: Dict[str, str]  # installed peer -> version


def _run(cmd: Sequence[str], env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=env)


def prepare(python: str, venv_dir: Path) -> Env:
    """A venv for ``python`` with the peers, and lpm's native library built for it."""
    version = _run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]).stdout.strip()
    if not version:
        raise SystemExit(f"tracing: {python} does not run")
    venv = venv_dir / f"trace-venv-{version}"
    vpy = venv / "bin" / "python"
    if not vpy.exists():
        note(f"creating {venv}")
        done = _run([python, "-m", "venv", str(venv)])
        if done.returncode != 0:
            raise SystemExit(f"tracing: cannot create {venv}: {done.stderr.strip()}")
    missing = [p for p in PEERS if _run([str(vpy), "-c", f"import {p}"]).returncode != 0]
    if missing:
        note(f"installing {', '.join(missing)} into {venv} (pip)")
        done = _run([str(vpy), "-m", "pip", "install", "-q", *missing])
        if done.returncode != 0:
            note(f"pip failed; missing peers are skipped: {done.stderr.strip()[-1000:]}")
    env = child_env()
    if _run([str(vpy), "-c", "import lpm.leech.native; lpm.leech.native._native.load()"], env).returncode != 0:
        note(f"building lpm's native library for Python {version}")
        done = _run([str(vpy), "-m", "pip", "install", "-q", "-e", str(REPO_ROOT)])
        if done.returncode != 0:
            raise SystemExit(f"tracing: cannot build the native leech: {done.stderr.strip()[-1000:]}")
    peers = {}
    for p in PEERS:
        got = _run([str(vpy), "-c", f"import importlib.metadata as m; print(m.version({p!r}))"])
        if got.returncode == 0:
            peers[p] = got.stdout.strip()
    return Env(str(vpy), version, peers)


def command(variant: str, env: Env, scratch: str) -> List[str]:
    py, script = env.python, str(WORKLOAD)
    if variant == "plain":
        return [py, script]
    if variant == "alloc-floor":
        return [py, "-m", "lpm", "run", "--implementation", "native", "--sample-rate", "0", script]
    if variant in ("lpm-alloc", "lpm-alloc-nosample"):
        sample = ["--alloc-sample", "0"] if variant == "lpm-alloc-nosample" else []
        return [py, "-m", "lpm", "run", "--implementation", "native", "--sample-rate", "0", "--alloc", *sample, script]
    if variant == "tracemalloc":
        return [py, "-X", "tracemalloc=1", script]
    if variant in ("floor", "lpm", "lpm-python"):
        impl = "python" if variant == "lpm-python" else "native"
        trace = ["--trace"] if variant != "floor" else []
        return [py, "-m", "lpm", "run", "--implementation", impl, "--sample-rate", "0", "--budget", str(64 << 20),
                *trace, script]
    if variant == "cprofile":
        return [py, "-m", "cProfile", "-o", os.path.join(scratch, "out.prof"), script]
    if variant == "yappi":
        return [py, "-c", YAPPI, script]
    if variant == "viztracer":
        return [py, "-m", "viztracer", "--quiet", "-o", os.path.join(scratch, "out.json"), script]
    if variant == "memray":
        return [py, "-m", "memray", "run", "-q", "-o", os.path.join(scratch, "out.bin"), script]
    raise ValueError(variant)


@dataclass
class Sample:
    hot: float
    cpu: float
    calls: int = 0  # lpm: PyCall events the reader got
    losses: int = 0  # lpm: PyDataLoss reports among them


def count_events(data: bytes) -> Dict[int, int]:
    """Events by type id, without decoding payloads."""
    reader = EventLogReader(strict=False)
    reader.feed(data)
    reader.close()
    by_id: Dict[int, int] = {}
    while reader.count(by_id) is not NEED_DATA:
        pass
    return by_id


def run_one(variant: str, env: Env, scale: float) -> Optional[Sample]:
    scratch = tempfile.mkdtemp(prefix="lpm-tracing-")
    try:
        extra = {"LPM_BENCH_SCALE": repr(scale), "LPM_DIR": scratch}
        if variant == "floor":
            extra["LPM_TRACE"] = "floor"
        if variant == "alloc-floor":
            extra["LPM_ALLOC"] = "floor"
        exited = threading.Event()
        drain = FifoDrain(scratch, exited, keep=True) if variant.startswith("lpm") or "floor" in variant else None
        code, _, usage, stdout, stderr = run_child(command(variant, env, scratch), child_env(extra), scratch, drain,
                                                   exited)
        if drain is not None:
            drain.join(10.0)
        hot = _FLOAT.search(stdout)
        if code != 0 or hot is None:
            note(f"{variant} failed (exit {code}): {stderr.decode('utf-8', 'replace').strip()[-300:]}")
            return None
        sample = Sample(float(hot.group(1)), usage.ru_utime + usage.ru_stime)
        if drain is not None:
            by_id = count_events(bytes(drain.data))
            sample.calls, sample.losses = by_id.get(PyCall.ID, 0), by_id.get(PyDataLoss.ID, 0)
        return sample
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(env: Env, variants: List[str], rounds: int, scale: float,
            traced: Dict[str, List[tuple[int, int]]]) -> Dict[str, List[tuple[float, float]]]:
    """variant -> [(hot ratio, cpu ratio)] per round; "lpm/floor" and "lpm-alloc/alloc-floor" ->
    lpm's over its floor's in the same round.  ``traced`` gets (calls, loss reports) per lpm run."""
    out: Dict[str, List[tuple[float, float]]] = {v: [] for v in variants}
    rng = random.Random(1)
    for r in range(rounds):
        order = variants[:]
        rng.shuffle(order)
        got: Dict[str, tuple[float, float]] = {}
        for variant in order:
            plain = run_one("plain", env, scale)
            tool = run_one(variant, env, scale)
            if plain is None or tool is None:
                continue
            got[variant] = (tool.hot / plain.hot, tool.cpu / plain.cpu)
            out[variant].append(got[variant])
            if variant in ("lpm", "lpm-python"):
                traced.setdefault(variant, []).append((tool.calls, tool.losses))
        for name, base in (("lpm", "floor"), ("lpm-alloc", "alloc-floor")):
            if name in got and base in got:
                out.setdefault(f"{name}/{base}", []).append((got[name][0] / got[base][0], got[name][1] / got[base][1]))
        note(f"Python {env.version}: round {r + 1}/{rounds} done")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", help="an interpreter to measure (repeatable; default: this one)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every variant (default 5)")
    parser.add_argument("--scale", type=float, default=0.3, help="the workload's scale (default 0.3: ~0.4 s plain)")
    parser.add_argument("--what", choices=["calls", "allocs"], default="calls",
                        help="calls: call tracing on calls.py (default); allocs: allocation tracking on alloc_gc.py "
                        "against tracemalloc and memray")
    parser.add_argument("--variants", help=f"comma-separated, of {','.join(VARIANTS + ALLOC_VARIANTS)}")
    parser.add_argument("--venv-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lpm-bench")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    global WORKLOAD
    WORKLOAD = WORKLOADS[args.what]
    known = VARIANTS if args.what == "calls" else ALLOC_VARIANTS
    chosen = args.variants.split(",") if args.variants else known
    report: Dict[str, object] = {}
    for python in args.python or [sys.executable]:
        env = prepare(python, args.venv_dir)
        variants = [v for v in chosen if v in known and (v not in PEERS or v in env.peers)]
        note(f"Python {env.version}: {', '.join(variants)}; peers {env.peers}")
        traced: Dict[str, List[tuple[int, int]]] = {}
        results = measure(env, variants, args.rounds, args.scale, traced)
        rows = []
        for variant, pairs in results.items():
            if not pairs:
                continue
            seen = traced.get(variant, [])
            calls = f"{statistics.median(c for c, _ in seen):,.0f}" if seen else ""
            losses = str(sum(lost for _, lost in seen)) if seen else ""
            rows.append([variant, med_range([p[0] for p in pairs]), med_range([p[1] for p in pairs]), calls, losses,
                         str(len(pairs))])
        print(f"\n## Python {env.version}, {WORKLOAD.name} at scale {args.scale}, {args.rounds} rounds\n")
        print(table(["variant", "hot time / plain", "CPU / plain", "calls traced", "loss reports", "rounds"], rows))
        report[env.version] = {v: {"hot": statistics.median(p[0] for p in pairs),
                                   "cpu": statistics.median(p[1] for p in pairs), "rounds": len(pairs)}
                               for v, pairs in results.items() if pairs}
        report[env.version + " peers"] = env.peers
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

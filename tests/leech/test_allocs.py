"""Allocation tracking (issue 9): a program allocating known amounts shows
them, per thread, with sampled stacks; switched on and off mid-run.  The
native leech only (the pure one cannot wrap the interpreter's allocators:
it says so)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lpm.eventlog import events as ev

from .conftest import native_available
from .helpers import PATIENCE, Stream, decode, recorded
from .live import on_in_phase_b

needs_native = pytest.mark.skipif(not native_available(), reason="the native leech is not built")
MB = 1_000_000


def last_totals(stream: Stream) -> dict[str, ev.PyAllocStats]:
    """Each thread's newest allocation totals, by thread name."""
    labels = {e.thread: e.label for e in stream.of_type(ev.ThreadLabel)}  # type: ignore[attr-defined]
    totals: dict[str, ev.PyAllocStats] = {}
    for e in stream.of_type(ev.PyAllocStats):
        assert isinstance(e, ev.PyAllocStats)
        name = labels.get(e.thread, str(e.thread))
        # The monitor's periodic totals and a thread's last ones come in
        # different blocks, in either order: the newest counts.
        if name not in totals or e.ts >= totals[name].ts:
            totals[name] = e
    return totals


def sample_sites(stream: Stream) -> Counter[str]:
    names = {e.code: e.name for e in stream.of_type(ev.PyCode)}  # type: ignore[attr-defined]
    sites: Counter[str] = Counter()
    for e in stream.of_type(ev.PyAllocSample):
        assert isinstance(e, ev.PyAllocSample)
        assert e.frames and all(n in names for n in e.frames), "every frame is declared"
        sites[names[e.frames[0]]] += e.size
    return sites


@needs_native
def test_known_allocations_per_thread(tmp_path: Path) -> None:
    stream = decode(recorded("alloc_known.py", [], tmp_path, "native", run_options=["--alloc", "--sample-rate", "0"]))
    assert stream.complete
    totals = last_totals(stream)
    keeper, churner = totals["keeper"], totals["churner"]
    # Kept: 2,000 x 10,000 bytes and their objects, nothing of it freed.
    assert 20 * MB <= keeper.allocated <= 21 * MB and keeper.freed < 1 * MB
    # Churned: 1,000 x 100,000 bytes, every one freed.
    # (A thread's frees count blocks others allocated too, a few at its start.)
    assert 100 * MB <= churner.allocated <= 101 * MB and 100 * MB <= churner.freed <= churner.allocated + MB
    assert churner.allocations >= 1000 and churner.frees >= 1000
    sites = sample_sites(stream)
    # One sample per 512 KiB: about 190 in churn(), 38 in keep(), each standing for 512 KiB.
    assert 90 * MB <= sites["churn"] <= 110 * MB, sites.most_common(5)
    assert 15 * MB <= sites["keep.<locals>.<listcomp>"] + sites["<listcomp>"] + sites["keep"] <= 25 * MB


@needs_native
def test_tracking_switched_on_and_off_while_the_program_runs(tmp_path: Path) -> None:
    stream = on_in_phase_b("alloc_phases.py", tmp_path, "native", "alloc")
    totals = last_totals(stream)["MainThread"]
    # Phase b allocated and freed 50 x 1 MB while tracking; a and c (80 MB each) were not seen.
    assert 50 * MB <= totals.allocated <= 55 * MB and 50 * MB <= totals.freed <= totals.allocated + MB
    sites = sample_sites(stream)
    assert sites["phase_b"] >= 40 * MB and not sites["phase_a"] and not sites["phase_c"]


def test_the_pure_leech_says_it_cannot(tmp_path: Path) -> None:
    script = tmp_path / "empty.py"
    script.write_text("pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "lpm", "run", "--implementation", "python", "--alloc", str(script)],
        capture_output=True, text=True, timeout=PATIENCE, env=dict(os.environ, LPM_DIR=str(tmp_path)),
    )
    assert done.returncode != 0 and "native leech" in done.stderr


@needs_native
def test_a_fork_under_tracking(tmp_path: Path) -> None:
    """The child of a tracked program allocates (through wrappers that now
    pass through) and exits as it means to; the parent's stream is whole and
    its totals are its own."""
    stream = decode(recorded("alloc_fork.py", [], tmp_path, "native", run_options=["--alloc", "--sample-rate", "0"]))
    assert stream.complete
    assert [e.marker for e in stream.of_type(ev.UserMarker)] == ["child 7"]  # type: ignore[attr-defined]
    assert last_totals(stream)["MainThread"].allocated < 5 * MB, "the child's 20 MB are not the parent's"

"""Exports of real recordings: collapsed stacks in flamegraph.pl's exact shape,
Chrome trace events that pass a strict structural check, speedscope files
whose samples and weights hold together, and the CLI around them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List


from lpm.eventlog import read_events
from lpm.eventlog import events as ev
from lpm.views import export


COLLAPSED_LINE = re.compile(r"^[^;\s]+(;[^;\s]+)* [1-9][0-9]*$")


def test_collapsed_stacks_have_flamegraphs_shape_and_every_sample(stacks_log: bytes) -> None:
    items = read_events(stacks_log)
    text = export.collapsed(items)
    lines = text.splitlines()
    assert lines and all(COLLAPSED_LINE.match(line) for line in lines), [l for l in lines if not COLLAPSED_LINE.match(l)][:3]
    samples = sum(1 for e in items if isinstance(e, ev.PySample))
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == samples
    stacks = {line.rsplit(" ", 1)[0] for line in lines}
    # Root first: the thread, then lpm run's own frames, then the program's.
    assert any(s.startswith("MainThread;") and s.endswith(";<module>;main_outer;main_spin") for s in stacks)
    spin = "Spinner.spin" if sys.version_info >= (3, 11) else "spin"
    assert any(s.startswith("spinner;") and s.endswith(f";worker_outer;{spin}") for s in stacks)


def check_trace_event(e: Dict[str, Any]) -> None:
    """The Trace Event Format's rules for the phases lpm writes."""
    assert isinstance(e["name"], str) and isinstance(e["pid"], int) and isinstance(e["tid"], int)
    ph = e["ph"]
    assert ph in ("X", "i", "C", "M"), ph
    if ph == "M":
        assert e["name"] == "thread_name" and isinstance(e["args"]["name"], str)
        return
    assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
    if ph == "X":
        assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0
    elif ph == "i":
        assert e["s"] in ("g", "p", "t")
    else:
        assert e["args"] and all(isinstance(v, (int, float)) for v in e["args"].values())


def test_chrome_trace_is_strict_and_complete(workers_log: bytes) -> None:
    items = read_events(workers_log)
    document = json.loads(export.chrome_trace(items))
    assert set(document) == {"traceEvents", "displayTimeUnit"}
    trace: List[Dict[str, Any]] = document["traceEvents"]
    for e in trace:
        check_trace_event(e)
    timed = [e["ts"] for e in trace if e["ph"] != "M"]
    assert timed == sorted(timed)
    names = {e["args"]["name"]: e["tid"] for e in trace if e["ph"] == "M"}
    assert {"MainThread", "worker-0", "worker-1", "worker-2"} <= set(names)
    spans = [e for e in trace if e.get("cat") == "span"]
    assert sorted(e["name"] for e in spans) == ["work 0", "work 1", "work 2"]
    assert all(names[f"worker-{e['name'][-1]}"] == e["tid"] for e in spans), "each span on its own thread"
    kinds = Counter(type(e).__name__ for e in items if isinstance(e, ev.Event))
    assert len([e for e in trace if e.get("cat") == "gc"]) == kinds["EndGC"]
    assert len([e for e in trace if e.get("cat") == "marker"]) == kinds["UserMarker"] == 3 * 50 + 2
    assert len([e for e in trace if e["ph"] == "C"]) == kinds["PyCounter"]


def test_speedscope_profiles_hold_together(stacks_log: bytes) -> None:
    items = read_events(stacks_log)
    document = json.loads(export.speedscope(items, name="stacks"))
    assert document["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = document["shared"]["frames"]
    assert all(set(f) == {"name", "file", "line"} for f in frames)
    samples = 0
    for profile in document["profiles"]:
        assert profile["type"] == "sampled" and profile["unit"] == "nanoseconds"
        assert len(profile["samples"]) == len(profile["weights"])
        assert all(0 <= i < len(frames) for stack in profile["samples"] for i in stack)
        assert profile["endValue"] - profile["startValue"] == sum(profile["weights"])
        samples += len(profile["samples"])
    assert samples == sum(1 for e in items if isinstance(e, ev.PySample))
    assert {"main_spin", "main_outer", "sleeper"} <= {f["name"] for f in frames}


def test_the_cli_exports_a_recording(tmp_path: Path, workers_log: bytes) -> None:
    recording = tmp_path / "run.eventlog"
    recording.write_bytes(workers_log)
    for fmt in ("speedscope", "chrome", "collapsed", "eventlog"):
        out = tmp_path / f"out.{fmt}"
        done = subprocess.run([sys.executable, "-m", "lpm", "client", "export", fmt, "--from", str(recording), "-o", str(out)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        if fmt == "eventlog":
            assert out.read_bytes() == workers_log
        elif fmt != "collapsed":
            json.loads(out.read_text())
    missing = subprocess.run([sys.executable, "-m", "lpm", "client", "export", "chrome", "--from", str(tmp_path / "nope"), "-o", "-"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "cannot read" in missing.stderr

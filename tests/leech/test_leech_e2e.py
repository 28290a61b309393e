"""Real processes: a program under `lpm run`, a reader on its FIFO, exact counts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from lpm.eventlog import Header, Skipped
from lpm.eventlog import events as ev

from ..ghc import peers
from .helpers import PROGRAMS, FifoReader, decode, finish, spawn, wait_for_fifo


def test_workers_stream_everything_exactly(
    tmp_path: Path, implementation: str, checker: Callable[[Path], peers.Counts]
) -> None:
    threads, markers, gcs = 4, 250, 5
    proc = spawn("workers.py", [str(threads), str(markers), str(gcs)], tmp_path, implementation, watched=True)
    reader = FifoReader(wait_for_fifo(tmp_path, proc))
    reader.start()
    code, out, err = finish(proc)
    reader.join(timeout=60)
    assert code == 7, err
    assert json.loads(out) == {"threads": threads, "markers": markers, "gcs": gcs}
    stream = decode(bytes(reader.data))
    assert stream.complete
    stream.assert_balanced()

    labels = {e.thread: e.label for e in stream.of_type(ev.ThreadLabel)}  # type: ignore[attr-defined]
    created = {e.thread for e in stream.of_type(ev.CreateThread)}  # type: ignore[attr-defined]
    workers = {n for n, name in labels.items() if name.startswith("worker-")}
    assert {labels[n] for n in workers} == {f"worker-{i}" for i in range(threads)}
    assert workers <= created
    stopped = {e.thread for e in stream.of_type(ev.StopThread)}  # type: ignore[attr-defined]
    assert workers <= stopped, "every worker's end is in the stream"

    names = [e.marker for e in stream.of_type(ev.UserMarker)]  # type: ignore[attr-defined]
    for i in range(threads):
        assert [m for m in names if m.startswith(f"worker {i} ")] == [f"worker {i} marker {j}" for j in range(markers)]
    assert "all done ✓" in [e.message for e in stream.of_type(ev.UserMessage)]  # type: ignore[attr-defined]

    # Exactly `gcs` collections between the two markers, all on the main thread.
    gc_begin = next(e for e in stream.of_type(ev.UserMarker) if e.marker == "gc begin")  # type: ignore[attr-defined]
    kinds = (ev.UserMarker, ev.StartGC, ev.EndGC, ev.PyGcCollection)
    main_events = [e for e in stream.events if type(e) in kinds and e.cap == gc_begin.cap]
    begin = next(i for i, e in enumerate(main_events) if getattr(e, "marker", "") == "gc begin")
    end = next(i for i, e in enumerate(main_events) if getattr(e, "marker", "") == "gc end")
    between = main_events[begin + 1 : end]
    assert [type(e) for e in between] == [ev.StartGC, ev.EndGC, ev.PyGcCollection] * gcs
    assert all(e.generation == 2 for e in between if isinstance(e, ev.PyGcCollection))

    spans = stream.of_type(ev.PySpanBegin)
    assert sorted(e.name for e in spans) == [f"work {i}" for i in range(threads)]  # type: ignore[attr-defined]
    assert {e.span for e in stream.of_type(ev.PySpanEnd)} == {e.span for e in spans}  # type: ignore[attr-defined]
    assert sorted(e.value for e in stream.of_type(ev.PyCounter)) == [float(i) for i in range(threads)]  # type: ignore[attr-defined]

    # Process info, redacted: the program's own argv is there.
    args = stream.of_type(ev.ProgramArgs)[0].args  # type: ignore[attr-defined]
    assert args[-3:] == (str(threads), str(markers), str(gcs))
    assert stream.of_type(ev.OsProcessPid)[0].pid == proc.pid  # type: ignore[attr-defined]

    # The recording is a valid eventlog: the ghc-events library reads all of it
    # and counts what lpm counts.
    recording = tmp_path / "recording.eventlog"
    recording.write_bytes(bytes(reader.data))
    theirs = checker(recording)
    ours, _ = peers.lpm_fast_counts(bytes(reader.data))
    assert theirs == ours


def test_a_thread_that_speaks_before_threading_lists_it_gets_its_name(tmp_path: Path, implementation: str) -> None:
    """A thread's first event may come before threading lists it (a
    collection in its start-up): numbered with the default name, its next
    event names it, though it ends long before the monitor's scan."""
    threads = 20
    proc = spawn("early_event.py", [str(threads)], tmp_path, implementation, watched=True)
    reader = FifoReader(wait_for_fifo(tmp_path, proc))
    reader.start()
    code, _, err = finish(proc)
    reader.join(timeout=60)
    assert code == 0, err
    stream = decode(bytes(reader.data))
    assert stream.complete
    names = [f"early-{i}" for i in range(threads)]
    marked = [e.marker for e in stream.of_type(ev.UserMarker)]  # type: ignore[attr-defined]
    assert marked == [m for name in names for m in (f"early {name}", f"late {name}")]
    labels: dict[int, str] = {}
    for e in stream.of_type(ev.ThreadLabel):
        labels[e.thread] = e.label  # type: ignore[attr-defined]
    assert sorted(label for label in labels.values() if label.startswith("early-")) == sorted(names)



def test_no_reader_ever(tmp_path: Path, implementation: str) -> None:
    proc = spawn("flood.py", ["4", "20000"], tmp_path, implementation, env={"LPM_BUDGET": "65536", "LPM_BUFFER_SIZE": "8192"})
    code, out, err = finish(proc)
    assert code == 0, err
    result = json.loads(out.splitlines()[-1])
    assert sum(result["emitted"]) == 80_000
    # 64 KiB of buffers hold a few thousand markers; the rest were dropped, counted.
    assert result["stats"]["dropped"] > 60_000
    assert result["stats"]["bytes_written"] == 0


def test_reader_stopped_then_resumed(tmp_path: Path, implementation: str) -> None:
    until = tmp_path / "stop-now"
    proc = spawn(
        "flood.py",
        ["8", "1000", str(until)],
        tmp_path,
        implementation,
        env={"LPM_BUDGET": "65536", "LPM_BUFFER_SIZE": "8192", "LPM_STOP_TIMEOUT": "60"},
    )
    out_path = tmp_path / "received.eventlog"
    with open(out_path, "wb") as sink:
        cat = subprocess.Popen(["cat", str(wait_for_fifo(tmp_path, proc))], stdout=sink)
        while out_path.stat().st_size == 0:  # the leech has found its reader
            time.sleep(0.005)
        cat.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # flood into a pipe nobody drains
        until.touch()
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"flood done\n", "the program finished its flood while its reader was stopped"
        cat.send_signal(signal.SIGCONT)
        # The rest through the same buffered reader that read the first line.
        out = proc.stdout.read().decode()
        code, _, err = finish(proc)
        cat.wait(timeout=60)
    assert code == 0, err
    assert out.strip(), f"no output after 'flood done'; stderr: {err}"
    emitted = json.loads(out.splitlines()[-1])["emitted"]
    stream = decode(out_path.read_bytes())
    assert stream.complete
    stream.assert_balanced()
    flooders = {e.thread: e.label for e in stream.of_type(ev.ThreadLabel) if e.label.startswith("flood-")}  # type: ignore[attr-defined]
    assert len(flooders) == 8
    accounts = stream.accounting.threads
    assert sorted(accounts[n].received + accounts[n].lost for n in flooders) == sorted(emitted)
    assert sum(accounts[n].lost for n in flooders) > 0, "the stopped reader made the leech drop, and say so"


def test_reader_killed_and_replaced(tmp_path: Path, implementation: str) -> None:
    until = tmp_path / "stop-now"
    proc = spawn("flood.py", ["2", "1000", str(until)], tmp_path, implementation)
    fifo = wait_for_fifo(tmp_path, proc)
    first = subprocess.Popen(["head", "-c", "200000", str(fifo)], stdout=subprocess.PIPE)
    head, _ = first.communicate(timeout=60)
    assert len(head) == 200_000
    second = FifoReader(fifo)
    second.start()
    while len(second.data) < 300_000:
        second.join(timeout=0.01)
    until.touch()
    code, out, err = finish(proc)
    second.join(timeout=60)
    assert code == 0, err
    stream = decode(bytes(second.data))
    # The pipe may still hold bytes the first reader left unread: the new
    # reader skips them, then gets a fresh header and the stream.
    at = 1 if isinstance(stream.items[0], Skipped) else 0
    assert isinstance(stream.items[at], Header), "a new reader gets a fresh header"
    assert stream.complete
    stream.assert_balanced()
    flooders = [e.thread for e in stream.of_type(ev.ThreadLabel) if e.label.startswith("flood-")]  # type: ignore[attr-defined]
    assert len(set(flooders)) == 2
    for n in set(flooders):
        assert stream.accounting.threads[n].first_seq, "the second reader joined mid-stream"


def test_tiny_budget_under_a_flood_of_markers(tmp_path: Path, implementation: str) -> None:
    proc = spawn(
        "flood.py",
        ["8", "3000"],
        tmp_path,
        implementation,
        env={"LPM_BUDGET": "8192", "LPM_BUFFER_SIZE": "4096", "LPM_STOP_TIMEOUT": "60"},
        watched=True,
    )
    reader = FifoReader(wait_for_fifo(tmp_path, proc))
    reader.start()
    code, out, err = finish(proc)
    reader.join(timeout=60)
    assert code == 0, err
    emitted = json.loads(out.splitlines()[-1])["emitted"]
    assert emitted == [3000] * 8
    stream = decode(bytes(reader.data))
    assert stream.complete
    stream.assert_balanced()
    # With two buffers for ten threads even the monitor's thread labels may be
    # dropped; the writer's closing blocks still bring every thread's final
    # sequence number and unreported loss.  Flood threads made 3000 events each.
    accounts = stream.accounting.threads.values()
    flooders = [a for a in accounts if a.produced == 3000]
    assert len(flooders) == 8
    assert all(a.received + a.lost == 3000 for a in flooders)
    assert sum(a.lost for a in flooders) > 0
    assert len(stream.of_type(ev.PyDataLoss)) > 0


@pytest.mark.parametrize("sampler", ["auto", "gil"])
def test_stack_samples_name_every_frame_of_every_thread(tmp_path: Path, implementation: str, sampler: str) -> None:
    if implementation == "python" and sampler == "gil":
        pytest.skip("the pure leech always samples with the GIL")
    options = ["--sample-rate", "200", "--sampler", sampler]
    proc = spawn("stacks.py", ["0.6"], tmp_path, implementation, run_options=options, watched=True)
    reader = FifoReader(wait_for_fifo(tmp_path, proc))
    reader.start()
    code, out, err = finish(proc)
    reader.join(timeout=60)
    assert code == 0, err
    first_lines = json.loads(out)
    stream = decode(bytes(reader.data))
    assert stream.complete

    # Codes are numbered 1, 2, ... once per generation, each declared before a
    # sample uses it; samples name only declared codes.
    codes: dict[int, ev.PyCode] = {}
    stacks: dict[int, list[list[ev.PyCode]]] = {}
    for e in stream.events:
        if isinstance(e, ev.PyGeneration):
            codes = {}
        elif isinstance(e, ev.PyCode):
            assert e.code == len(codes) + 1, "code numbers run 1, 2, ... in a generation"
            codes[e.code] = e
        elif isinstance(e, ev.PySample):
            assert all(n in codes for n in e.frames), f"sample {e} names an undeclared code"
            stacks.setdefault(e.thread, []).append([codes[n] for n in e.frames])
    labels = {e.thread: e.label for e in stream.of_type(ev.ThreadLabel)}  # type: ignore[attr-defined]
    by_name = {label: stacks.get(number, []) for number, label in labels.items()}
    assert not by_name["lpm-monitor"], "the leech does not sample its own thread"

    qualified = sys.version_info >= (3, 11)  # co_qualname

    def chains(thread: str) -> set[tuple[str, ...]]:
        return {tuple(c.name for c in stack[:3]) for stack in by_name[thread]}

    assert ("main_spin", "main_outer", "<module>") in chains("MainThread")
    assert (("Spinner.spin" if qualified else "spin"), "worker_outer", ("Thread.run" if qualified else "run")) in chains("spinner")
    assert any(chain[0] == "sleeper" for chain in chains("sleeper"))
    program = str(PROGRAMS / "stacks.py")
    for stack in by_name["spinner"]:
        if stack[0].name.endswith("spin") and len(stack) > 1:
            assert (stack[0].filename, stack[0].first_line) == (program, first_lines["Spinner.spin"])
            assert (stack[1].filename, stack[1].first_line) == (program, first_lines["worker_outer"])
            break
    else:
        raise AssertionError("no sample of the spinner in Spinner.spin")

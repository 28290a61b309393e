"""Stack samples: the background sampler of the native leech (no GIL), its
fallback, and the sample rate as the control FIFO sets it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lpm.eventlog import events as ev

from .conftest import native_available
from .helpers import PATIENCE, FifoReader, Stream, decode, finish, recorded, spawn, wait_for_fifo
from .test_control import send, wait_until

needs_native = pytest.mark.skipif(not native_available(), reason="the native leech is not built")

Sample = tuple[int, int, list[ev.PyCode]]  # ts, thread number, frames innermost first


def samples(stream: Stream) -> list[Sample]:
    """Every sample with its code objects, checking that each was declared
    in the sample's generation before it."""
    codes: dict[int, ev.PyCode] = {}
    out: list[Sample] = []
    for e in stream.events:
        if isinstance(e, ev.PyGeneration):
            codes = {}
        elif isinstance(e, ev.PyCode):
            codes[e.code] = e
        elif isinstance(e, ev.PySample):
            assert all(n in codes for n in e.frames), f"sample {e} names an undeclared code"
            out.append((e.ts, e.thread, [codes[n] for n in e.frames]))
    return out


def marker_ts(stream: Stream, name: str) -> int:
    return next(e.ts for e in stream.of_type(ev.UserMarker) if e.marker == name)  # type: ignore[attr-defined]


@needs_native
@pytest.mark.parametrize("sampler", ["auto", "gil"])
def test_samples_while_a_c_call_holds_the_gil(tmp_path: Path, sampler: str) -> None:
    """sum(range(n)) keeps the GIL for 0.6 s: the background sampler sees
    the program in it, a sampler that needs the GIL sees nothing."""
    options = ["--sample-rate", "200", "--sampler", sampler]
    stream = decode(recorded("gil_hog.py", ["0.6"], tmp_path, "native", run_options=options))
    assert stream.complete
    start, end = marker_ts(stream, "hog-start"), marker_ts(stream, "hog-end")
    inside = [frames for ts, _, frames in samples(stream) if start < ts < end]
    in_hog = [frames for frames in inside if [c.name for c in frames[:2]] == ["hog", "<module>"]]
    if sampler == "auto":
        # 120 expected at 200 Hz; a busy machine may starve the sampler some.
        assert len(in_hog) >= 20, f"{len(in_hog)} samples in hog() while it held the GIL"
    else:
        # Samples can land at the edges, where the interpreter hands the GIL
        # over (a few of them when the machine is busy), never in the C call:
        # nothing in the middle half of the time between the markers.
        quarter = (end - start) // 4
        middle = [ts for ts, _, _ in samples(stream) if start + quarter < ts < end - quarter]
        assert middle == [], f"{len(middle)} samples taken with the GIL while a C call held it"


@needs_native
def test_background_sampler_under_thread_and_code_churn(tmp_path: Path) -> None:
    """Threads that live a millisecond, code objects made and freed all the
    time (their addresses reused), stacks deeper than a data-stack chunk:
    at 1000 Hz, no sample names a wrong function or loses frames to a
    moving stack, and short-lived threads are sampled too.  The program
    churns until the stream holds enough samples in leaf(), from enough
    threads: on a busy machine that takes longer, not fewer samples."""
    until = tmp_path / "stop-now"
    options = ["--sample-rate", "1000"]
    proc = spawn("churn.py", [str(until)], tmp_path, "native", run_options=options, watched=True)
    reader = FifoReader(wait_for_fifo(tmp_path, proc))
    reader.start()

    def leaf_samples(stream: Stream) -> list[tuple[int, list[ev.PyCode]]]:
        return [(thread, frames) for _, thread, frames in samples(stream) if frames and frames[0].name == "leaf"]

    def enough(data: bytes) -> bool:
        so_far = leaf_samples(decode(data))
        return len(so_far) >= 50 and len({thread for thread, _ in so_far}) >= 10

    # Decoding a stream of deep stacks at 1000 Hz is no small job: twice a second.
    wait_until(reader, enough, "50 samples in leaf() from 10 threads", every=0.5)
    until.touch()
    code, out, err = finish(proc)
    reader.join(PATIENCE)
    assert code == 0, err
    started = int(out)
    stream = decode(bytes(reader.data))
    assert stream.complete
    stream.assert_balanced()
    in_leaf = leaf_samples(stream)
    assert len(in_leaf) >= 50, f"only {len(in_leaf)} samples in leaf()"
    for _, frames in in_leaf:
        # dyn_<i> is defined on line i + 1 and leaf two lines below it.
        dyn = frames[1]
        assert dyn.name == f"dyn_{dyn.first_line - 1}" and frames[0].first_line == dyn.first_line + 2, (
            f"leaf at line {frames[0].first_line} under {dyn.name} at line {dyn.first_line}: a code object named wrongly"
        )
    # leaf, dyn, deep x 401, through_generators' gen and itself, worker, run,
    # _bootstrap_inner, _bootstrap.
    full = sum(1 for _, frames in in_leaf if len(frames) >= 405)
    assert full >= 0.9 * len(in_leaf), f"{len(in_leaf) - full} of {len(in_leaf)} stacks torn"
    threads = {thread for thread, _ in in_leaf}
    assert len(threads) >= 10, f"samples of only {len(threads)} of {started} short-lived threads"
    created = {e.thread for e in stream.of_type(ev.CreateThread)}  # type: ignore[attr-defined]
    assert threads <= created, "every sampled thread was announced"


def test_rate_command_stops_and_restarts_sampling(tmp_path: Path, implementation: str) -> None:
    until = tmp_path / "stop-now"
    proc = spawn("steady.py", [str(until)], tmp_path, implementation, run_options=["--sample-rate", "50"])
    fifo = wait_for_fifo(tmp_path, proc)
    reader = FifoReader(fifo)
    reader.start()

    def setting(value: str) -> bool:
        events = decode(bytes(reader.data)).of_type(ev.PySetting)
        return any((e.key, e.value) == ("lpm.sample_rate", value) for e in events)  # type: ignore[attr-defined]

    wait_until(reader, lambda d: len(decode(d).of_type(ev.PySample)) >= 5, "the first samples")
    send(fifo, "rate 0")
    wait_until(reader, lambda _: setting("0.0"), "rate 0 take effect")
    time.sleep(0.4)
    sampled = len(decode(bytes(reader.data)).of_type(ev.PySample))
    send(fifo, "rate 400")
    wait_until(reader, lambda _: setting("400.0"), "rate 400 take effect")
    wait_until(reader, lambda d: len(decode(d).of_type(ev.PySample)) >= sampled + 60, "samples at 400 Hz")
    until.touch()
    code, _, err = finish(proc)
    reader.join(PATIENCE)
    assert code == 0, err
    stream = decode(bytes(reader.data))
    assert stream.complete
    changes = {e.value: e.ts for e in stream.of_type(ev.PySetting) if e.key == "lpm.sample_rate"}  # type: ignore[attr-defined]
    off, on = changes["0.0"], changes["400.0"]
    assert on - off > 300_000_000
    stamps = [ts for ts, _, _ in samples(stream)]
    # The setting is emitted after the change: a tick under way at "rate 0"
    # may land just after it, the first at "rate 400" just before it.
    assert not [ts for ts in stamps if off + 50_000_000 < ts < on - 50_000_000], "samples while the rate was 0"
    after = [ts for ts in stamps if ts > on]
    # 60 came after the "rate 400" (waited for above); only a tick under way may precede the setting.
    assert len(after) >= 40, f"only {len(after)} samples after the rate went to 400 Hz"


@needs_native
def test_a_thread_sampled_before_its_first_event_gets_its_name(tmp_path: Path) -> None:
    """The background sampler numbers a thread it meets running (default
    name); the thread's first event names it, even if it ends before the
    monitor's scan could."""
    stream = decode(recorded("adopted.py", ["30"], tmp_path, "native", run_options=["--sample-rate", "1000"]))
    labels: dict[int, str] = {}
    for e in stream.of_type(ev.ThreadLabel):
        labels[e.thread] = e.label  # type: ignore[attr-defined]
    marked = [e.marker for e in stream.of_type(ev.UserMarker)]  # type: ignore[attr-defined]
    assert marked == [f"late {i}" for i in range(30)]
    sampled = {thread for _, thread, _ in samples(stream)}
    late = {n for n, label in labels.items() if label.startswith("late-")}
    assert sampled & late, "some threads were sampled (numbered by the sampler) before they spoke"
    assert {labels[n] for n in late} == {f"late-{i}" for i in range(30)}, "every thread ends up with its name"

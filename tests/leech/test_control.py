"""Commands through the control FIFO change a running program's leech."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lpm.eventlog import events as ev

from .helpers import PATIENCE, FifoReader, decode, finish, spawn, wait_for_fifo


def send(fifo: Path, line: str) -> None:
    control = str(fifo)[: -len(".data")] + ".ctl"
    fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def wait_until(reader: FifoReader, predicate: object, what: str, every: float = 0.01) -> None:
    """Until ``predicate`` holds of the bytes read so far, looked at ``every`` seconds."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if predicate(bytes(reader.data)):  # type: ignore[operator]
            return
        time.sleep(every)
    raise AssertionError(f"never saw {what}")


def generations(data: bytes) -> int:
    return len(decode(data).of_type(ev.PyGeneration))


def commands_took_effect(data: bytes, generations_before: int) -> bool:
    """The monitor carries commands out in order, "resend" last."""
    stream = decode(data)
    settings = {(e.key, e.value) for e in stream.of_type(ev.PySetting)}  # type: ignore[attr-defined]
    return (
        ("lpm.sample_rate", "500.0") in settings
        and ("lpm.heap_interval", "0.05") in settings
        and len(stream.of_type(ev.PyHeap)) >= 2
        and len(stream.of_type(ev.PyGeneration)) > generations_before
    )


def test_pause_rate_heap_interval_and_resend(tmp_path: Path, implementation: str) -> None:
    until = tmp_path / "stop-now"
    proc = spawn("steady.py", [str(until)], tmp_path, implementation, run_options=["--heap-interval", "0"])
    fifo = wait_for_fifo(tmp_path, proc)
    reader = FifoReader(fifo)
    reader.start()
    wait_until(reader, lambda d: b"tick 20" in d, "the first markers")
    before = generations(bytes(reader.data))
    send(fifo, "pause")
    time.sleep(0.3)  # the program goes on emitting; the leech skips it all
    send(fifo, "rate 500")
    send(fifo, "heap-interval 0.05")
    send(fifo, "resume")
    send(fifo, "resend")  # last: a new generation shows every command before it was carried out
    send(fifo, "warp 9")
    wait_until(reader, lambda d: commands_took_effect(d, before), "every command take effect")
    until.touch()
    code, out, err = finish(proc)
    reader.join(timeout=PATIENCE)
    assert code == 0, err
    emitted = int(out)
    stream = decode(bytes(reader.data))
    assert stream.complete
    stream.assert_balanced()
    ticks = [int(e.marker.split()[1]) for e in stream.of_type(ev.UserMarker)]  # type: ignore[attr-defined]
    assert ticks == sorted(ticks)
    skipped = emitted - len(ticks)
    assert skipped > 0, "markers emitted while paused were skipped"
    gap = max(b - a for a, b in zip(ticks, ticks[1:]))
    assert gap == skipped + 1, "the skipped markers are exactly the paused stretch, not lost ones"
    assert not stream.of_type(ev.PyDataLoss), "pausing is not loss"
    settings = {(e.key, e.value) for e in stream.of_type(ev.PySetting)}  # type: ignore[attr-defined]
    assert ("lpm.sample_rate", "500.0") in settings and ("lpm.heap_interval", "0.05") in settings
    assert len(stream.of_type(ev.PyHeap)) >= 2, "heap figures came once the interval was set"
    assert len(stream.of_type(ev.PyGeneration)) > before, "resend started a new generation"

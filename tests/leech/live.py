"""A program under ``lpm run`` driven while it runs: its stream read as it
comes, control commands sent, and waits on what the stream says."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from lpm.eventlog import events as ev

from .helpers import PATIENCE, FifoReader, Stream, decode, finish, spawn, wait_for_fifo
from .test_control import send


class LiveProgram:
    """``program`` started in ``tmp`` with a reader on its FIFO."""

    def __init__(self, program: str, args: Sequence[str], tmp: Path, implementation: str,
                 run_options: Sequence[str] = ("--sample-rate", "0")) -> None:
        self.proc = spawn(program, args, tmp, implementation, run_options=run_options)
        self.fifo = wait_for_fifo(tmp, self.proc)
        self.reader = FifoReader(self.fifo)
        self.reader.start()

    def stream(self) -> Stream:
        return decode(bytes(self.reader.data))

    def wait(self, predicate: Callable[[ev.Event], bool], what: str) -> None:
        """Until an event of the stream so far satisfies ``predicate``."""
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            if any(predicate(e) for e in self.stream().events):
                return
            time.sleep(0.01)
        raise AssertionError(f"never saw {what}")

    def wait_marker(self, name: str) -> None:
        self.wait(lambda e: isinstance(e, ev.UserMarker) and e.marker == name, f"the marker {name!r}")

    def command(self, line: str, setting: str, value: str) -> None:
        """Send a control command, and wait for the setting it reports."""
        send(self.fifo, line)
        self.wait(lambda e: isinstance(e, ev.PySetting) and (e.key, e.value) == (setting, value),
                  f"{setting} = {value} after {line!r}")

    def finish(self) -> Stream:
        """The whole stream once the program has exited 0."""
        code, _, err = finish(self.proc)
        self.reader.join(PATIENCE)
        assert code == 0, err
        stream = self.stream()
        assert stream.complete
        return stream


def on_in_phase_b(program: str, tmp: Path, implementation: str, mode: str) -> Stream:
    """``program`` runs phases a, b and c (it waits for the files go-b and go-c
    between them, and marks "a done" and "b done"); the control command
    ``mode`` ("trace", "alloc") turns on after a and off after b.  The stream."""
    go_b, go_c = tmp / "go-b", tmp / "go-c"
    live = LiveProgram(program, [str(go_b), str(go_c)], tmp, implementation)
    live.wait_marker("a done")
    live.command(f"{mode} on", f"lpm.{mode}", "on")
    go_b.touch()
    live.wait_marker("b done")
    live.command(f"{mode} off", f"lpm.{mode}", "off")
    go_c.touch()
    return live.finish()

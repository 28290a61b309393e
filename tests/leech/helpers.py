"""Running sample programs under the leech, reading their FIFOs, and checking
the counts in what arrives."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from lpm.eventlog import EndOfStream, Event, Header, read_events
from lpm.eventlog.accounting import Accounting
from lpm.leech.paths import SERVER_MARK, open_reader

PROGRAMS = Path(__file__).resolve().parent / "programs"
#: Generous bound for waiting on a process of ours; no test relies on it for timing.
PATIENCE = 60.0


def spawn(
    program: str,
    args: Sequence[str],
    lpm_dir: Path,
    implementation: str,
    env: dict[str, str] | None = None,
    run_options: Sequence[str] = (),
    watched: bool = False,
) -> subprocess.Popen[bytes]:
    """``python -m lpm run PROGRAM ARGS`` with its FIFOs in ``lpm_dir``;
    ``watched``: see :func:`watch`."""
    if watched:
        watch(lpm_dir)
    full_env = dict(os.environ, LPM_DIR=str(lpm_dir), **(env or {}))
    cmd = [sys.executable, "-m", "lpm", "run", "--implementation", implementation, *run_options]
    return subprocess.Popen(
        [*cmd, str(PROGRAMS / program), *args], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def watch(lpm_dir: Path) -> None:
    """Stand, as a server does, for a reader that will come: a program that
    ends before the test's reader opened its FIFO (a short one, on a busy
    machine) then waits for it, up to its stop timeout, rather than taking
    its events with it.  Only for tests that start a reader."""
    (lpm_dir / SERVER_MARK).write_text(f"{os.getpid()}\n")


def wait_for_fifo(lpm_dir: Path, proc: subprocess.Popen[bytes] | None = None) -> Path:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        found = sorted(lpm_dir.glob("lpm-*.data"))
        if found:
            return found[0]
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"program exited ({proc.returncode}) before making its FIFO: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        time.sleep(0.005)
    raise AssertionError(f"no FIFO appeared in {lpm_dir}")


class FifoReader(threading.Thread):
    """Reads a FIFO to EOF into ``data``."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.data = bytearray()

    def run(self) -> None:
        with open(open_reader(str(self.path)), "rb", buffering=0) as f:
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    return
                self.data += chunk


@dataclass
class Stream:
    """A decoded lpm stream and its per-thread accounts."""

    items: list[object]
    accounting: Accounting = field(default_factory=Accounting)

    @property
    def events(self) -> list[Event]:
        return [i for i in self.items if isinstance(i, Event)]

    @property
    def complete(self) -> bool:
        end = self.items[-1]
        return isinstance(end, EndOfStream) and end.complete

    def of_type(self, cls: type[Event]) -> list[Event]:
        return [e for e in self.events if type(e) is cls]

    def assert_balanced(self) -> None:
        """received + reported lost == produced, per thread, with nothing unreported."""
        bad = {
            n: (a.received, a.lost, a.first_seq, a.produced, a.gaps)
            for n, a in self.accounting.threads.items()
            if not a.balanced
        }
        assert not bad, f"threads whose counts do not add up (received, lost, first, produced, gaps): {bad}"


def decode(data: bytes) -> Stream:
    items: list[object] = list(read_events(bytes(data)))
    stream = Stream(items)
    for item in items:
        if isinstance(item, Header):
            stream.accounting.reset()
        elif isinstance(item, Event):
            stream.accounting.add(item)
    return stream


def recorded(program: str, args: Sequence[str], lpm_dir: Path, implementation: str,
             run_options: Sequence[str] = (), exit_code: int = 0) -> bytes:
    """Run PROGRAM under `lpm run` to its end with a reader on its FIFO; the stream."""
    proc = spawn(program, args, lpm_dir, implementation, run_options=run_options, watched=True)
    reader = FifoReader(wait_for_fifo(lpm_dir, proc))
    reader.start()
    code, _, err = finish(proc)
    reader.join(PATIENCE)
    assert code == exit_code, err
    return bytes(reader.data)


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=PATIENCE)
    return proc.returncode, out.decode(), err.decode()

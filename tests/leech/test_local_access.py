"""Local access (issue 8): what a leech and a server do with files planted
in the lpm directory.  The directory itself is checked in
tests/unit/test_leech_parts.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .helpers import PATIENCE, finish, spawn, wait_for_fifo


def test_a_planted_symlink_is_never_followed(tmp_path: Path, implementation: str) -> None:
    """The data FIFO swapped for a symlink to a file: the leech, looking for a
    reader, never writes through it; the program ends normally."""
    until = tmp_path / "stop"
    proc = spawn("steady.py", [str(until)], tmp_path, implementation)
    fifo = wait_for_fifo(tmp_path, proc)
    target = tmp_path.parent / f"{tmp_path.name}-target"
    target.write_bytes(b"")
    control = Path(str(fifo)[: -len(".data")] + ".ctl")
    deadline = time.monotonic() + PATIENCE
    while not control.exists():  # made just after the data FIFO
        assert time.monotonic() < deadline, "no control FIFO"
        time.sleep(0.005)
    os.unlink(fifo)
    os.symlink(target, fifo)
    os.unlink(control)
    os.symlink(target, control)
    time.sleep(1.0)  # the writer retries its reader with backoff meanwhile
    until.touch()
    code, _, err = finish(proc)
    assert code == 0, err
    assert target.read_bytes() == b"", "nothing was written through the symlink"


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's FIFO needs root")
def test_the_server_refuses_fifos_it_does_not_own(tmp_path: Path) -> None:
    from ..server.wire import start_server, wait_for, WireClient

    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    planted = lpm_dir / "lpm-4242-0123456789ab.data"
    named = tmp_path / "theirs.fifo"
    for path in (planted, named):
        os.mkfifo(path, 0o600)
        os.chown(path, 65534, 65534)  # nobody's
    server, address = start_server(tmp_path, "--dir", str(lpm_dir), "--fifo", str(named))
    try:
        log = tmp_path / "server.log"
        wait_for(lambda: "refusing source" in log.read_text() and "not a FIFO of this user" in log.read_text(),
                 "the server to refuse both FIFOs")
        client = WireClient(address)
        assert client.call("sources")["result"] == [], "neither FIFO became a source"
        client.close()
    finally:
        server.terminate()
        server.wait(PATIENCE)

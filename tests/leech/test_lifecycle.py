"""Starting the leech without changing the program, and across fork()."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lpm.eventlog import events as ev

from .helpers import PATIENCE, PROGRAMS, FifoReader, decode, finish, spawn, wait_for_fifo, watch

ROOT = Path(__file__).resolve().parent.parent.parent


def test_forked_child_streams_on_its_own(tmp_path: Path, implementation: str) -> None:
    go = tmp_path / "go"
    go.mkdir()
    lpm_dir = tmp_path / "lpm"
    lpm_dir.mkdir(mode=0o700)
    proc = spawn("forker.py", [str(go)], lpm_dir, implementation)
    readers: dict[int, FifoReader] = {}
    deadline = time.monotonic() + PATIENCE
    while len(readers) < 2 and time.monotonic() < deadline:
        for fifo in lpm_dir.glob("lpm-*.data"):
            pid = int(fifo.name.split("-")[1])
            if pid not in readers:
                readers[pid] = FifoReader(fifo)
                readers[pid].start()
        time.sleep(0.005)
    assert len(readers) == 2, "parent and child each made their own FIFOs"
    for pid, reader in readers.items():
        while not reader.data:  # attached: the leech has sent its header
            reader.join(timeout=0.01)
    child_pid = next(p for p in readers if p != proc.pid)
    (go / str(child_pid)).touch()
    readers[child_pid].join(timeout=PATIENCE)
    (go / str(proc.pid)).touch()
    code, out, err = finish(proc)
    assert code == 0, err
    child_code, reported_child = (int(x) for x in out.split())
    assert child_code == 0 and reported_child == child_pid
    for pid, reader in readers.items():
        reader.join(timeout=PATIENCE)
        stream = decode(bytes(reader.data))
        assert stream.complete
        stream.assert_balanced()
        role = "parent" if pid == proc.pid else "child"
        assert [e.marker for e in stream.of_type(ev.UserMarker)] == [f"{role} {pid} {i}" for i in range(100)]  # type: ignore[attr-defined]
        assert stream.of_type(ev.OsProcessPid)[0].pid == pid  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with lpm installed the way the README says (pip install .)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()
    return venv / "bin" / "python"


def test_autostart_streams_a_program_that_knows_nothing_of_lpm(installed: Path, tmp_path: Path) -> None:
    env = dict(os.environ, LPM_AUTOSTART="1", LPM_DIR=str(tmp_path))
    watch(tmp_path)
    proc = subprocess.Popen(
        [str(installed), str(PROGRAMS / "untouched.py"), "a1", "b2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    reader = FifoReader(wait_for_fifo(tmp_path, proc))
    reader.start()
    code, out, err = finish(proc)
    reader.join(timeout=PATIENCE)
    assert code == 0, err
    assert out == "untouched a1 b2\n"
    stream = decode(bytes(reader.data))
    assert stream.complete
    stream.assert_balanced()
    assert stream.of_type(ev.ProgramArgs)[0].args[-2:] == ("a1", "b2")  # type: ignore[attr-defined]
    assert "cruncher" in {e.label for e in stream.of_type(ev.ThreadLabel)}  # type: ignore[attr-defined]


def test_without_autostart_lpm_is_not_even_imported(installed: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LPM_AUTOSTART"}
    done = subprocess.run(
        [str(installed), "-c", "import sys; print('lpm' in sys.modules)"], env=env, capture_output=True, timeout=60
    )
    assert done.stdout == b"False\n", done.stderr


def test_the_readme_demo_runs_from_an_installed_copy(installed: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(installed), "-m", "lpm", "demo"], capture_output=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert b"events per type" in done.stdout

"""Recordings of the leech's sample programs, shared by the export tests."""

from __future__ import annotations

import pytest

from ..leech.helpers import FifoReader, finish, spawn, wait_for_fifo


@pytest.fixture(scope="session")
def stacks_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("stacks")
    proc = spawn("stacks.py", ["0.5"], tmp, "native", run_options=["--sample-rate", "200"])
    reader = FifoReader(wait_for_fifo(tmp, proc))
    reader.start()
    code, _, err = finish(proc)
    reader.join(60)
    assert code == 0, err
    return bytes(reader.data)


@pytest.fixture(scope="session")
def workers_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("workers")
    proc = spawn("workers.py", ["3", "50", "4"], tmp, "native")
    reader = FifoReader(wait_for_fifo(tmp, proc))
    reader.start()
    code, _, err = finish(proc)
    reader.join(60)
    assert code == 7, err
    return bytes(reader.data)

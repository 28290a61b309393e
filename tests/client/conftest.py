"""Recordings of the leech's sample programs, shared by the export tests."""

from __future__ import annotations

import pytest

from ..leech.helpers import recorded


@pytest.fixture(scope="session")
def stacks_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return recorded("stacks.py", ["0.5"], tmp_path_factory.mktemp("stacks"), "native", ["--sample-rate", "200"])


@pytest.fixture(scope="session")
def workers_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return recorded("workers.py", ["3", "50", "4"], tmp_path_factory.mktemp("workers"), "native", exit_code=7)

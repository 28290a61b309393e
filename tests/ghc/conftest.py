"""Session fixtures: the compiled GHC programs and the eventlogs they write.

Without ``ghc`` on PATH every test here is skipped, unless LPM_REQUIRE_PEERS=1
(set by CI), which turns the skip into a failure.  ``ghc``, ``binaries`` and
``checker`` are in tests/conftest.py: the leech tests use the checker too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict

import pytest

from . import peers


@pytest.fixture(scope="session")
def ghc_events_command() -> str:
    """The ``ghc-events`` command-line tool."""
    path = shutil.which("ghc-events")
    if path is None:
        peers.missing_peer("the ghc-events command is not on PATH")
    return path


@pytest.fixture(scope="session")
def ghc_logs(binaries: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Dict[str, peers.GhcLog]:
    return peers.run_programs(binaries, tmp_path_factory.mktemp("eventlogs"))


@pytest.fixture(scope="session")
def killed_log(binaries: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> peers.KilledLog:
    return peers.run_until_killed(binaries["Forever"], tmp_path_factory.mktemp("killed"))

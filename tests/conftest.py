"""Fixtures shared by every test directory: the real GHC peers.

The ghc-events checker (tests/haskell/EventCounts.hs, built on the ghc-events
library) is what says whether a file is a valid eventlog; the GHC programs are
compiled once and cached by source hash (tests/ghc/peers.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Dict

import pytest

from .ghc import peers


@pytest.fixture(scope="session")
def ghc() -> str:
    path = shutil.which("ghc")
    if path is None:
        peers.missing_peer("ghc is not on PATH")
    return path


@pytest.fixture(scope="session")
def binaries(ghc: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    return peers.build_programs(ghc, tmp_path_factory.mktemp("ghc-build"), peers.cache_dir())


@pytest.fixture(scope="session")
def checker(binaries: Dict[str, Path]) -> Callable[[Path], peers.Counts]:
    """Runs the ghc-events checker on a file (once per file per session)."""
    seen: Dict[Path, peers.Counts] = {}

    def check(path: Path) -> peers.Counts:
        if path not in seen:
            seen[path] = peers.run_checker(binaries[peers.CHECKER], path)
        return seen[path]

    return check

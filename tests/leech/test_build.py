"""leech.c compiles cleanly against this interpreter's headers.

setuptools prints the compiler's warnings and goes on, so a warning (a macro
defined twice, one definition silently shadowing the other for the code
below it) would otherwise pass every run.  Each interpreter ``.ci/run`` tests
compiles it here with the flags setup.py gives, and warnings as errors."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc: the native leech is not built here either")
def test_leech_c_compiles_without_warnings(tmp_path: Path) -> None:
    include = sysconfig.get_paths()["include"]
    out = tmp_path / "leech.so"
    done = subprocess.run(
        ["gcc", "-shared", "-fPIC", f"-I{include}", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror",
         "-fvisibility=hidden", str(ROOT / "leech.c"), "-o", str(out)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0

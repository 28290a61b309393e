"""What ``lpm run`` leaves in the program's heap.

Every object the leech keeps alive is walked by each full collection the
program makes, so lpm's footprint is part of its cost on an
allocation-heavy program (bench/overhead.py's gc workload).  Counted, not
timed: GC-tracked objects that collections walk, and loaded modules, against
the same program run plainly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .helpers import PATIENCE, PROGRAMS

#: lpm's objects that the program's collections walk, with the native leech,
#: which keeps its own and ctypes' out of them (lpm.leech.footprint): the
#: leech's state made after it started and the objects of the C modules it
#: loads (zlib, pwd...): about 260 on 3.11 and 3.13, 400 on 3.9, at the time
#: of writing.
MOST_WALKED_NATIVE = 600
#: The same with the pure leech, which cannot: lpm's own objects, about 930
#: at the time of writing (typing alone would add ~900, dataclasses or logging
#: more).
MOST_WALKED_PURE = 2500
#: Modules the command line needs only to parse its options, and modules a
#: plain ``python script.py`` does not load that runpy.run_path would.
NOT_LEFT = {"argparse", "gettext", "locale", "shutil", "bz2", "lzma", "pkgutil", "typing", "logging", "dataclasses"}


def census(lpm_dir: Path, *lpm: str) -> dict[str, object]:
    # With .pyc files, as an installed lpm has them: compiling a source file
    # runs the builtin compile(), which sets up the ast module's classes (510
    # objects on 3.9, 950 on 3.13) in the program.  Written under lpm_dir
    # by a first run, read by the second.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(LPM_DIR=str(lpm_dir), PYTHONPYCACHEPREFIX=str(lpm_dir / "pycache"))
    command = [sys.executable, *lpm, str(PROGRAMS / "heap_census.py")]
    for _ in range(2):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=PATIENCE)
        assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_lpm_run_adds_few_objects_and_no_parsing_modules(implementation: str, tmp_path: Path) -> None:
    plain = census(tmp_path)
    leeched = census(tmp_path, "-m", "lpm", "run", "--implementation", implementation)
    assert isinstance(plain["objects"], int) and isinstance(leeched["objects"], int)
    added = leeched["objects"] - plain["objects"]
    most = MOST_WALKED_NATIVE if implementation == "native" else MOST_WALKED_PURE
    assert 0 < added <= most, f"lpm run added {added} objects that the program's collections walk"
    assert isinstance(plain["modules"], list) and isinstance(leeched["modules"], list)
    left = (set(leeched["modules"]) - set(plain["modules"])) & NOT_LEFT
    assert not left, f"lpm run left {sorted(left)} loaded in the program"


def test_lpm_run_runs_a_script_as_python_does(implementation: str, tmp_path: Path) -> None:
    """lpm runs a source file itself (without runpy, for the footprint
    above): what the script sees must be what ``python script.py`` gives."""
    script = str(PROGRAMS / "script_facts.py")
    env = dict(os.environ, LPM_DIR=str(tmp_path))
    plain = subprocess.run([sys.executable, script, "7", "x"], env=env, capture_output=True, text=True,
                           timeout=PATIENCE)
    leeched = subprocess.run([sys.executable, "-m", "lpm", "run", "--implementation", implementation, script, "7", "x"],
                             env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert (plain.returncode, leeched.returncode) == (7, 7), leeched.stderr
    facts = json.loads(plain.stdout)
    assert facts["annotations_evaluated"] and facts["main_is_here"] and facts["pickles"] and facts["path0"]
    assert json.loads(leeched.stdout) == facts


def test_lpm_run_reports_a_syntax_error_as_python_does(implementation: str, tmp_path: Path) -> None:
    """The script is compiled by lpm (through the C API with the native
    leech): a syntax error is still reported with the file and line."""
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\ny = (\n")
    env = dict(os.environ, LPM_DIR=str(tmp_path))
    plain = subprocess.run([sys.executable, str(bad)], env=env, capture_output=True, text=True, timeout=PATIENCE)
    leeched = subprocess.run([sys.executable, "-m", "lpm", "run", "--implementation", implementation, str(bad)],
                             env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert plain.returncode == leeched.returncode == 1
    last = plain.stderr.strip().splitlines()[-1]
    assert last.startswith("SyntaxError") and leeched.stderr.strip().splitlines()[-1] == last
    assert f'File "{bad}", line 2' in leeched.stderr

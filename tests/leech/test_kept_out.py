"""lpm's own objects kept out of the program's collections (native leech).

Each full collection walks every tracked object; lpm's are never garbage while
it runs, so the native leech moves them to a ring of its own
(``lpm_gc_keep_out`` in leech.c, chosen by lpm.leech.footprint) and hands them
back when it stops.  These tests check the ring keeps what it holds alive and
out of sight, gives it all back, survives objects freed and changed while on
it, and that ``lpm run`` takes lpm's objects and leaves the program's."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from .conftest import native_available
from .helpers import PATIENCE, PROGRAMS

needs_native = pytest.mark.skipif(not native_available(), reason="the native leech is not built")


class Node:
    def __init__(self) -> None:
        self.other: object = None


def walked(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


@needs_native
def test_kept_out_objects_are_not_collected_until_let_in() -> None:
    from lpm import _native

    lib = _native.load()
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle only the collector frees
    gone = weakref.ref(a)
    assert lib.lpm_gc_keep_out([a, b, vars(a), vars(b), 7]) == 4  # 7 is not tracked
    assert not walked(a) and gc.is_tracked(a)
    del a, b
    gc.collect()
    assert gone() is not None, "the collector freed a cycle it should not see"
    assert lib.lpm_gc_let_in() == 4
    assert lib.lpm_gc_let_in() == 0
    gc.collect()
    assert gone() is None, "the cycle handed back was not collected"


@needs_native
def test_kept_out_objects_can_be_freed_and_changed() -> None:
    from lpm import _native

    lib = _native.load()
    table: dict[str, object] = {"start": []}  # tracked: it holds a container
    freed, kept = Node(), Node()
    assert lib.lpm_gc_keep_out([table, freed, kept]) == 3
    del freed  # its deallocator unlinks it from the ring
    # New garbage that a kept-out dict refers to stays alive; once it lets
    # go, the collector frees it.
    junk = Node()
    junk.other = junk
    table["junk"] = junk
    alive = weakref.ref(junk)
    del junk
    for generation in (0, 1, 2):
        gc.collect(generation)
    assert alive() is not None
    table.clear()
    gc.collect()
    assert alive() is None
    # Keeping out again replaces the ring: what it held is let in first.
    assert lib.lpm_gc_keep_out([kept]) == 1
    assert walked(table) and not walked(kept)
    assert lib.lpm_gc_let_in() == 1
    assert walked(kept)
    gc.collect()


def kept_out_report(implementation: str, tmp_path: Path, *args: str, keep_out: str = "on") -> dict[str, object]:
    env = dict(os.environ, LPM_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "lpm", "run", "--implementation", implementation,
                           "--keep-out", keep_out, str(PROGRAMS / "kept_out.py"), *args], env=env,
                          capture_output=True, text=True, timeout=PATIENCE)
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return report


def test_lpm_run_keeps_lpm_out_and_the_program_in(implementation: str, tmp_path: Path) -> None:
    report = kept_out_report(implementation, tmp_path, "fork")
    native = implementation == "native"
    kept_out = report["kept_out"]
    assert isinstance(kept_out, int) and (kept_out > 500 if native else kept_out == 0)
    assert report["lpm_dict_tracked"] and report["lpm_dict_walked"] is not native
    assert report["leech_walked"] is not native
    assert report["program_not_walked"] == [], "the leech kept the program's own objects from its collections"
    assert report["lpm_alive"]
    child = report["child"]
    assert isinstance(child, dict)
    # A forked child lets in what its parent's leech kept out and keeps out its own.
    assert (child["kept_out"] > 500 if native else child["kept_out"] == 0)
    assert child["lpm_dict_walked"] is not native
    assert report["after_stop_lpm_dict_walked"], "lpm's objects were not handed back when it stopped"


def test_keep_out_off_leaves_lpm_walked(implementation: str, tmp_path: Path) -> None:
    report = kept_out_report(implementation, tmp_path, keep_out="off")
    assert report["kept_out"] == 0 and report["lpm_dict_walked"] and report["leech_walked"]
    assert report["program_not_walked"] == [] and report["lpm_alive"]


def test_lpm_start_in_a_program_keeps_lpm_out_too(implementation: str, tmp_path: Path) -> None:
    env = dict(os.environ, LPM_DIR=str(tmp_path), LPM_IMPLEMENTATION=implementation)
    done = subprocess.run([sys.executable, str(PROGRAMS / "kept_out.py")], env=env, capture_output=True, text=True,
                          timeout=PATIENCE)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    native = implementation == "native"
    assert (report["kept_out"] > 500 if native else report["kept_out"] == 0)
    assert report["lpm_dict_walked"] is not native and report["program_not_walked"] == []
    assert report["lpm_alive"] and report["after_stop_lpm_dict_walked"]

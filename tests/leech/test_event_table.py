"""leech.c's table of event ids agrees with the Python registry and with pure.py.

``lpm_event_table()`` lists every event type the C library writes: id, the
size a header declares for it, and its class name in lpm/eventlog/events.py.
The pure twin writes exactly the :mod:`lpm.leech.wire` kinds whose ids its
source names, and the C sampler what the monitor's Python walk writes, so the
C library's set must be their union.
"""

from __future__ import annotations

import ctypes
import inspect
import re

import pytest

from lpm import _native
from lpm.errors import LeechError
from lpm.eventlog import EVENT_TYPES, catalog
from lpm.eventlog.events import declared_size
from lpm.leech import pure, tracing, wire
from lpm.leech.monitor import Monitor
from lpm.leech.sink import Sink


@pytest.fixture(scope="module")
def lib() -> ctypes.PyDLL:
    try:
        return _native.load()
    except LeechError as err:
        pytest.skip(f"the native leech is not built: {err}")


def table(lib: ctypes.PyDLL) -> list[tuple[int, int, str]]:
    raw: bytes = lib.lpm_event_table()
    rows = []
    for line in raw.decode("ascii").splitlines():
        id_text, size_text, name = line.split()
        rows.append((int(id_text, 0), int(size_text, 0), name))
    return rows


def test_every_id_is_registered_with_the_same_size_and_name(lib: ctypes.PyDLL) -> None:
    rows = table(lib)
    assert rows, "the table is empty"
    for type_id, size, name in rows:
        cls = EVENT_TYPES.get(type_id)
        assert cls is not None, f"id {type_id:#x} ({name}) is not in lpm.eventlog.EVENT_TYPES"
        assert cls.__name__ == name, f"id {type_id:#x} is {cls.__name__} in Python, {name} in leech.c"
        assert declared_size(cls) == size, f"{name}: leech.c says {size} bytes, the header declares {declared_size(cls)}"


def test_ids_are_unique(lib: ctypes.PyDLL) -> None:
    ids = [type_id for type_id, _, _ in table(lib)]
    assert len(ids) == len(set(ids))


def test_the_c_library_writes_what_the_pure_leech_writes(lib: ctypes.PyDLL) -> None:
    kinds = set(re.findall(r"wire\.([A-Z_]+)\.ID", inspect.getsource(pure) + inspect.getsource(tracing)))
    sampled = set(re.findall(r"wire\.([A-Z_]+)\b", inspect.getsource(Monitor._sample_python)))
    assert sampled == {"PY_CODE", "PY_SAMPLE"}
    # The background sampler's table and the generation go together (leech.c).
    generation = set(re.findall(r"wire\.([A-Z_]+)\b", inspect.getsource(Sink.new_generation)))
    assert generation == {"PY_GENERATION"}
    written_by_pure = {getattr(wire, kind).NAME for kind in kinds | sampled | generation}
    assert len(written_by_pure) > 10
    written_by_c = {name for _, _, name in table(lib)}
    # Allocation tracking wraps the interpreter's allocators: C only.
    assert written_by_c - written_by_pure == {"PyAllocStats", "PyAllocSample"}
    assert written_by_pure <= written_by_c


def test_the_loader_and_the_library_agree_on_the_abi(lib: ctypes.PyDLL) -> None:
    assert lib.lpm_abi_version() == _native.ABI_VERSION


def test_every_kind_the_leech_writes_matches_the_decoder() -> None:
    kinds = [value for value in vars(wire).values() if isinstance(value, wire.Kind)]
    assert len(kinds) > 20
    for kind in kinds:
        cls = EVENT_TYPES[kind.ID]
        assert cls.__name__ == kind.NAME
        assert (cls.LAYOUT.codes, cls.VARIABLE, declared_size(cls)) == (
            kind.LAYOUT.codes,
            kind.VARIABLE,
            catalog.declared_size(kind.LAYOUT.codes),
        )

"""The native leech: finds and loads the shared library built from leech.c.

The library is built by ``pip install`` next to this file, named like an
extension module (``_leech.cpython-311-x86_64-linux-gnu.so``) so that each
interpreter finds the build made against its own headers.  It is loaded with
``ctypes.PyDLL``, which keeps the GIL held across calls and raises any
exception a function leaves set, and every function's signature is declared
once, here.  The ABI itself is described at the top of ``leech.c``.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
from functools import lru_cache

from ..errors import LeechError

#: The C ABI version this module was written against (LPM_ABI_VERSION in leech.c).
ABI_VERSION = 5

_HERE = os.path.dirname(os.path.abspath(__file__))


class Config(ctypes.Structure):
    """``struct lpm_config``: what the C sink needs to know, decided in Python."""

    _fields_ = [
        ("buffers", ctypes.c_uint64),
        ("buffer_size", ctypes.c_uint64),
        ("fixed_clock", ctypes.c_uint64),
        ("has_fixed_clock", ctypes.c_int32),
        ("max_text", ctypes.c_uint32),
        ("flush_interval", ctypes.c_double),
        ("idle_tick", ctypes.c_double),
        ("backoff_first", ctypes.c_double),
        ("backoff_factor", ctypes.c_double),
        ("backoff_last", ctypes.c_double),
        ("stop_timeout", ctypes.c_double),
    ]


_CTX = ctypes.py_object
_SIGNATURES: dict[str, tuple[list[type], type | None]] = {
    "lpm_event_table": ([], ctypes.c_char_p),
    "lpm_sink_new": (
        [ctypes.POINTER(Config), ctypes.py_object, ctypes.py_object, ctypes.py_object],
        ctypes.py_object,
    ),
    "lpm_sink_functions": ([_CTX], ctypes.py_object),
    "lpm_sink_start": ([_CTX], ctypes.c_int),
    "lpm_sink_stop": ([_CTX], ctypes.c_int),
    "lpm_thread_number": ([_CTX, ctypes.c_ulong, ctypes.c_ulong, ctypes.py_object], ctypes.c_int64),
    "lpm_thread_renamed": ([_CTX, ctypes.c_ulong, ctypes.py_object], ctypes.c_int),
    "lpm_thread_gone": ([_CTX, ctypes.c_ulong], ctypes.c_int),
    "lpm_take_new": ([_CTX], ctypes.py_object),
    "lpm_take_commands": ([_CTX], ctypes.py_object),
    "lpm_sequence_points": ([_CTX], ctypes.py_object),
    "lpm_stats": ([_CTX], ctypes.py_object),
    "lpm_set_paused": ([_CTX, ctypes.c_int], ctypes.c_int),
    "lpm_paused": ([_CTX], ctypes.c_int),
    "lpm_now": ([_CTX], ctypes.c_uint64),
    "lpm_start_ns": ([_CTX], ctypes.c_uint64),
    "lpm_reader_events": ([_CTX], ctypes.c_uint64),
    "lpm_backlog": ([_CTX], ctypes.c_uint64),
    "lpm_bg_start": ([_CTX, ctypes.c_double], ctypes.c_int),
    "lpm_bg_rate": ([_CTX, ctypes.c_double], ctypes.c_int),
    "lpm_bg_generation": ([_CTX, ctypes.c_uint32], ctypes.c_int),
    "lpm_trace": ([_CTX, ctypes.c_int, ctypes.c_ulong], ctypes.c_int),
    "lpm_trace_stats": ([_CTX], ctypes.py_object),
    "lpm_alloc": ([_CTX, ctypes.c_int, ctypes.c_ulonglong], ctypes.c_int),
    "lpm_alloc_stats": ([_CTX], ctypes.py_object),
    "lpm_bg_stats": ([_CTX], ctypes.py_object),
    "lpm_bg_stop": ([_CTX], ctypes.c_int),
    "lpm_gc_keep_out": ([ctypes.py_object], ctypes.c_ssize_t),
    "lpm_gc_let_in": ([], ctypes.c_ssize_t),
}


def candidates() -> list[str]:
    """Paths the library may have, best first."""
    return [os.path.join(_HERE, "_leech" + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES]


@lru_cache(maxsize=None)
def load() -> ctypes.PyDLL:
    """Load the library, check its ABI and declare its functions.

    Raises:
        LeechError: no candidate could be loaded; the message lists each
            path tried and why it failed.
    """
    reasons = []
    for path in candidates():
        if not os.path.exists(path):
            reasons.append(f"{path}: not built")
            continue
        try:
            lib = ctypes.PyDLL(path)
        except OSError as err:
            reasons.append(f"{path}: {err}")
            continue
        lib.lpm_abi_version.argtypes = []
        lib.lpm_abi_version.restype = ctypes.c_int
        version = lib.lpm_abi_version()
        if version != ABI_VERSION:
            reasons.append(f"{path}: ABI version {version}, expected {ABI_VERSION} (rebuild with pip install)")
            continue
        for name, (argtypes, restype) in _SIGNATURES.items():
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = restype
        return lib
    raise LeechError("cannot load the native leech:\n  " + "\n  ".join(reasons))

"""The native leech: finds and loads the shared library built from leech.c.

The library is built by ``pip install`` next to this file, named like an
extension module (``_leech.cpython-311-x86_64-linux-gnu.so``) so that each
interpreter finds the build made against its own headers.  It is loaded with
``ctypes.PyDLL``, which keeps the GIL held across calls, and every function's
signature is declared once, here.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
from functools import lru_cache

from ..errors import LeechError

#: The C ABI version this module was written against (LPM_ABI_VERSION in leech.c).
ABI_VERSION = 1

_HERE = os.path.dirname(os.path.abspath(__file__))


def candidates() -> list[str]:
    """Paths the library may have, best first."""
    return [os.path.join(_HERE, "_leech" + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES]


@lru_cache(maxsize=None)
def load() -> ctypes.PyDLL:
    """Load the library and check its ABI.

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
        return lib
    raise LeechError("cannot load the native leech:\n  " + "\n  ".join(reasons))

"""Prints the objects the cyclic GC walks, and the modules loaded, as JSON.

It first imports what the leech and ``python -m`` load from the standard
library, but for ctypes, which the native leech keeps out of the collections
with its own objects (lpm.leech.footprint): a plain run and a run under
``lpm run`` differ by the objects of lpm's that the program's collections
walk."""

import gc
import json
import sys

import collections  # noqa: F401
import functools  # noqa: F401
import importlib.util  # noqa: F401
import re  # noqa: F401
import runpy  # noqa: F401
import struct  # noqa: F401
import threading  # noqa: F401
import weakref  # noqa: F401

gc.collect()
print(json.dumps({"objects": len(gc.get_objects()), "modules": sorted(sys.modules)}))

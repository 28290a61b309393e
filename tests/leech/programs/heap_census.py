"""Prints the objects the cyclic GC tracks, and the modules loaded, as JSON.

It first imports what the leech itself needs from the standard library, so
that a plain run and a run under ``lpm run`` differ by lpm's own objects and
by whatever else lpm imports."""

import gc
import json
import sys

import collections  # noqa: F401
import ctypes  # noqa: F401
import functools  # noqa: F401
import importlib.util  # noqa: F401
import re  # noqa: F401
import runpy  # noqa: F401
import struct  # noqa: F401
import threading  # noqa: F401
import weakref  # noqa: F401

gc.collect()
print(json.dumps({"objects": len(gc.get_objects()), "modules": sorted(sys.modules)}))

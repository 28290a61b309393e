"""lpm's own objects, named so the native leech can keep them out of collections.

Each full collection the program makes walks every tracked object in the
process.  lpm's (its modules' functions, classes and dicts, ctypes, which it
loads, and the running leech) live as long as the leech and are never
garbage, yet each costs every full collection a cache miss or
more: on an allocation-heavy program that is a few percent by the clock
(README, Benchmarks).  The native library moves the objects named here into
a ring of its own that collections never walk (``lpm_gc_keep_out`` in
``leech.c``) and hands them back when the leech stops.

Which objects are lpm's: everything reachable, through ``gc.get_referents``,
from lpm's modules, and from ctypes when lpm loaded it (for its native
library: programs seldom load ctypes themselves), and the weak references
to them (a class's entries in its bases' subclass lists), without crossing
into anything another module owns: another module, its dict or any value in
it (``os.environ`` stays the program's), a class or function defined
elsewhere, or an instance of one, unless it is a plain value (a dict, a lock,
a deque, a module's spec).  Frames, generators and coroutines are running
code, not state, and stay where they are.  Objects lpm makes later are left
to the collector.

The other modules lpm loads (threading, struct, re...) stay walked: most
programs load them too, and keeping them out would make a program that does
walk less under lpm than without it.  A program that imports ctypes after
lpm did finds it kept out, about 520 objects it would otherwise walk.
"""

from __future__ import annotations

import gc
import sys
from _weakref import getweakrefs

#: Types whose objects are running code: their contents change as it runs.
_RUNNING = frozenset({"frame", "generator", "coroutine", "async_generator"})
#: Modules of the classes of plain values (their ``__module__``): an instance
#: of one that lpm holds is lpm's.
_VALUES = frozenset({"builtins", "collections", "weakref", "re", "_thread", "_struct", "_frozen_importlib",
                     "_frozen_importlib_external"})
#: What lpm loads for itself that programs seldom load: its native library's loader.
_LOADERS = frozenset({"ctypes", "_ctypes", "ctypes._endian"})


def lpm_modules(with_ctypes: bool) -> set[str]:
    """Names of lpm's modules, and of ctypes' when ``with_ctypes`` (lpm loaded it)."""
    return {name for name in list(sys.modules)
            if name == "lpm" or name.startswith("lpm.") or (with_ctypes and name in _LOADERS)}


def lpm_objects(with_ctypes: bool) -> list[object]:
    """The tracked objects that belong to lpm (see the module docstring)."""
    ours = lpm_modules(with_ctypes)
    theirs: set[int] = set()
    roots: list[object] = []
    for name, module in list(sys.modules.items()):
        if name in ours:
            roots.append(module)
            continue
        namespace = getattr(module, "__dict__", None)
        theirs.add(id(module))
        if isinstance(namespace, dict):
            theirs.add(id(namespace))
            theirs.update(id(value) for value in list(namespace.values()))
    seen: set[int] = set()
    found: list[object] = []
    stack = roots
    while stack:
        obj = stack.pop()
        key = id(obj)
        if key in seen or key in theirs:
            continue
        seen.add(key)
        kind = type(obj)
        if isinstance(obj, (type, type(lpm_objects))):  # a class or function: where it was defined
            if getattr(obj, "__module__", None) not in ours:
                continue
            if not gc.is_tracked(obj):  # a class of a C module: its dict is tracked
                stack.extend(gc.get_referents(vars(obj)))
        elif kind.__module__ not in ours and kind.__module__ not in _VALUES:
            continue  # an instance of a class from elsewhere
        if kind.__name__ in _RUNNING or not gc.is_tracked(obj):
            continue
        found.append(obj)
        stack.extend(gc.get_referents(obj))
        stack.extend(getweakrefs(obj))
    return found

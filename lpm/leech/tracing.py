"""Call tracing in Python: the pure leech's twin of leech.c's "call tracing".

The same events (``PyCall``, ``PyReturn``: a code number each), the same
numbering (from 2**31 up, one number per function for the whole run,
declared with ``PyCode`` once per generation in the thread that used it
first; C functions
named as cProfile names them, declared with file ``<built-in>`` and line 0),
the same hooks: ``sys.monitoring`` from 3.12, with callbacks written in
Python here; a profile function before.

lpm's own code is left out: here it is Python, and tracing it would have
the tracer write events from inside the sink's own event path (its locks
held).  A thread is "inside lpm" from the call of one of lpm's functions to
its return, and every event in between is skipped.

Before 3.12 Python offers no way to set another running thread's profile
function, which the native leech does from C.  So this twin turns tracing on
in the thread that asks (``lpm.start(trace="on")`` and ``lpm run --trace``:
the program's main thread), in threads started later (``threading``'s
profile hook), and in any other running thread at its next lpm event (a
marker, a collection); a thread that emits nothing is not traced until it
does.  Turning tracing off reaches every thread at its next call.
"""

from __future__ import annotations

import struct
import sys
import threading
from types import BuiltinFunctionType, MethodDescriptorType, ModuleType

from . import wire

_LPM = __file__.rsplit("/", 2)[0] + "/"  # lpm's package directory

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    from types import CodeType, FrameType
    from typing import Any

    from .pure import PureSink

#: The tracer's code numbers start here, apart from the samplers'.
TRACE_FIRST = 1 << 31
_EVENT = struct.Struct(">HQI")
_VARIABLE_HEAD = struct.Struct(">HQH")
_CALL, _RETURN = wire.PY_CALL.ID, wire.PY_RETURN.ID
_MONITORING = sys.version_info >= (3, 12)
#: sys.monitoring ids tried in turn: the profiler's, then two nobody reserves.
_TOOLS = (2, 4, 3)


def _type_name(t: type) -> str:
    """A type's name as its C ``tp_name`` reads for builtin types."""
    module = getattr(t, "__module__", "builtins")
    return t.__qualname__ if module == "builtins" else f"{module}.{t.__qualname__}"


def c_function_name(fn: object) -> str | None:
    """"module.name" or "type.name" for a C function (a builtin or a method
    descriptor), None for any other callable."""
    if type(fn) is BuiltinFunctionType:
        owner = fn.__self__
        name = fn.__name__
        if owner is not None and not isinstance(owner, ModuleType):
            return f"{_type_name(type(owner))}.{name}"
        module = fn.__module__
        return f"{module}.{name}" if module else name
    if type(fn) is MethodDescriptorType:
        return f"{_type_name(fn.__objclass__)}.{fn.__name__}"
    return None


class CallTracer:
    """Call tracing for a :class:`~lpm.leech.pure.PureSink`."""

    def __init__(self, sink: PureSink) -> None:
        self.sink = sink
        self.mode = "off"
        self.skip: frozenset[int] = frozenset()
        self.gen = 0
        self.epoch = 0  # bumped at every change; threads catch up at their next event (before 3.12)
        self.numbered = 0
        self._codes: dict[CodeType, tuple[int, int]] = {}  # code -> (generation, number); 0: lpm's own
        self._inside = threading.local()  # .depth: calls of lpm's own code under way
        self._functions: dict[str, tuple[int, int]] = {}  # C function name -> (generation, number)
        self._old_hook: Any = None
        self._tool: int | None = None

    # -- turning it on and off -----------------------------------------------

    def set_mode(self, mode: str, skip: frozenset[int]) -> None:
        self.skip = skip
        if mode == self.mode:
            return
        if self.mode != "off":
            self._stop()
        self.mode = mode
        self.epoch += 1
        if mode != "off":
            self._start()

    def _start(self) -> None:
        if _MONITORING:
            mon: Any = getattr(sys, "monitoring")
            for tool in _TOOLS:
                try:
                    mon.use_tool_id(tool, "lpm")
                except ValueError:
                    continue
                self._tool = tool
                break
            else:
                raise RuntimeError("every sys.monitoring tool id lpm could use is taken")
            ev = mon.events
            floor = self.mode == "floor"
            callbacks = {
                ev.PY_START: self._enter, ev.PY_RESUME: self._enter, ev.PY_THROW: self._enter,
                ev.PY_RETURN: self._leave, ev.PY_YIELD: self._leave, ev.PY_UNWIND: self._leave,
                ev.CALL: self._c_call, ev.C_RETURN: self._c_leave, ev.C_RAISE: self._c_leave,
            }
            mask = 0
            for event, callback in callbacks.items():
                mon.register_callback(self._tool, event, _nothing if floor else callback)
                mask |= event
            mon.set_events(self._tool, mask)
            return
        self._old_hook = getattr(threading, "_profile_hook", None)
        threading.setprofile(self._installer)
        self.adopt()

    def _stop(self) -> None:
        if _MONITORING:
            mon = getattr(sys, "monitoring")
            if self._tool is not None:
                mon.set_events(self._tool, 0)
                for event in (mon.events.PY_START, mon.events.PY_RESUME, mon.events.PY_THROW,
                              mon.events.PY_RETURN, mon.events.PY_YIELD, mon.events.PY_UNWIND,
                              mon.events.CALL, mon.events.C_RETURN, mon.events.C_RAISE):
                    mon.register_callback(self._tool, event, None)
                mon.free_tool_id(self._tool)
                self._tool = None
            return
        threading.setprofile(self._old_hook)
        self._old_hook = None
        if sys.getprofile() in (self._profile, _nothing_profile):
            sys.setprofile(None)

    def adopt(self) -> None:
        """This thread's hook as the mode wants it (before 3.12)."""
        if _MONITORING or threading.get_ident() in self.skip:
            return
        if self.mode == "off":
            if sys.getprofile() in (self._profile, _nothing_profile):
                sys.setprofile(None)
            return
        current = sys.getprofile()
        if current is None or current in (self._profile, _nothing_profile, self._installer):
            sys.setprofile(_nothing_profile if self.mode == "floor" else self._profile)

    def _installer(self, frame: FrameType, event: str, arg: object) -> None:
        self.adopt()
        if self.mode == "on":
            self._profile(frame, event, arg)

    # -- numbers -------------------------------------------------------------

    def _next(self) -> int:
        self.numbered += 1
        return TRACE_FIRST | (self.numbered & 0x7FFFFFFF)

    def _code(self, code: CodeType) -> int:
        """Its number; 0 for lpm's own code."""
        known = self._codes.get(code)
        if known is not None and (known[0] == self.gen or known[1] == 0):
            return known[1]
        if code.co_filename.startswith(_LPM):
            self._codes[code] = (self.gen, 0)
            return 0
        n = known[1] if known is not None else self._next()  # an earlier generation's: declared again
        self._codes[code] = (self.gen, n)
        self._declare(n, code.co_firstlineno, getattr(code, "co_qualname", code.co_name), code.co_filename)
        return n

    def _function(self, fn: object) -> int:
        name = c_function_name(fn)
        if name is None:
            return 0
        known = self._functions.get(name)
        if known is not None and known[0] == self.gen:
            return known[1]
        n = known[1] if known is not None else self._next()
        self._functions[name] = (self.gen, n)
        self._declare(n, 0, name, "<built-in>")
        return n

    def _declare(self, n: int, line: int, name: str, filename: str) -> None:
        payload = wire.PY_CODE.encode(n, line, name, filename)
        ts = self.sink.now()
        self.sink._emit(_VARIABLE_HEAD.pack(wire.PY_CODE.ID, ts, len(payload)) + payload, ts, False)

    def _put(self, kind: int, n: int) -> None:
        ts = self.sink.now()
        self.sink._emit(_EVENT.pack(kind, ts, n), ts, False)

    # -- the hooks -----------------------------------------------------------

    def _enter_code(self, code: CodeType) -> None:
        n = self._code(code)
        depth: int = getattr(self._inside, "depth", 0)
        if depth or n == 0:
            self._inside.depth = depth + 1  # inside lpm: counts every call until it is out
        else:
            self._put(_CALL, n)

    def _leave_code(self, code: CodeType) -> None:
        depth: int = getattr(self._inside, "depth", 0)
        if depth:
            self._inside.depth = depth - 1
            return
        n = self._code(code)
        if n:
            self._put(_RETURN, n)

    def _c_event(self, kind: int, caller: CodeType, fn: object) -> None:
        if getattr(self._inside, "depth", 0) or self._code(caller) == 0:
            return
        n = self._function(fn)
        if n:
            self._put(kind, n)

    def _profile(self, frame: FrameType, event: str, arg: object) -> None:
        if self.mode != "on":
            sys.setprofile(None)
            return
        if event == "call":
            self._enter_code(frame.f_code)
        elif event == "return":
            self._leave_code(frame.f_code)
        elif event == "c_call":
            self._c_event(_CALL, frame.f_code, arg)
        elif event == "c_return" or event == "c_exception":
            self._c_event(_RETURN, frame.f_code, arg)

    def _enter(self, code: CodeType, *_: object) -> None:
        if threading.get_ident() not in self.skip:
            self._enter_code(code)

    def _leave(self, code: CodeType, *_: object) -> None:
        if threading.get_ident() not in self.skip:
            self._leave_code(code)

    def _c_call(self, code: CodeType, offset: int, fn: object, *_: object) -> None:
        if threading.get_ident() not in self.skip:
            self._c_event(_CALL, code, fn)

    def _c_leave(self, code: CodeType, offset: int, fn: object, *_: object) -> None:
        if threading.get_ident() not in self.skip:
            self._c_event(_RETURN, code, fn)


def _nothing(*_: object) -> None:
    """The floor: a sys.monitoring callback that does nothing."""


def _nothing_profile(frame: FrameType, event: str, arg: object) -> None:
    """The floor: a profile function that does nothing."""

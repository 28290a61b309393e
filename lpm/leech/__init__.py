"""The leech: the in-process half of lpm.

``start()`` makes this process's FIFOs, builds the buffers and writer (native
when the C library loads, else the pure-Python twin), hooks the GC, and starts
the monitor thread; ``stop()`` undoes all of it after writing the last events
and the end marker.  Both are idempotent, run at exit, and are fork-aware: a
child process that inherited a running leech starts its own stream.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
import threading
import time

from ..errors import LeechError
from ..eventlog import catalog
from .config import LeechConfig, from_environment
from .monitor import Monitor
from . import paths
from .paths import FifoPair, make_fifos
from .sink import Sink

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    from typing import Any

#: ctypes is lpm's (lpm.leech.footprint) unless the program loaded it before
#: the leech, which loads it only to load the native library.
_CTYPES_OURS = "ctypes" not in sys.modules

#: Which implementation the last start() chose: "native" or "python".
IMPLEMENTATION: str | None = None


class Leech:
    """One running leech: FIFOs, sink, monitor, GC hook."""

    def __init__(self, config: LeechConfig, data_path: str | None = None, control_path: str | None = None) -> None:
        self.config = config
        self.fifos: FifoPair | None = None
        if data_path is None:
            self.fifos = make_fifos(config.directory)
            data_path, control_path = self.fifos.data, self.fifos.control
        self.data_path = data_path
        self.control_path = control_path
        #: How many of lpm's objects the program's collections do not walk.
        self.kept_out = 0
        header = catalog.header()
        self.sink = make_sink(config, header, data_path, control_path, self._on_connect)
        self.monitor = Monitor(self.sink)
        self.pid = os.getpid()

    def _on_connect(self) -> None:
        self.monitor.request_resend()

    def start(self) -> None:
        self.sink.start()
        self.monitor.own_thread(self.sink.writer_ident)
        gc.callbacks.append(self.sink.gc_callback)
        self.monitor.start()
        if self.config.trace != "off":
            self.monitor.trace(self.config.trace)
        if self.config.alloc != "off":
            self.monitor.alloc(True, floor=self.config.alloc == "floor")
        if self.config.asyncio == "on":
            self.monitor.track_tasks(True)
        if self.config.keep_out == "on":
            self.kept_out = self.sink.keep_out(_CTYPES_OURS)

    def stop(self) -> None:
        self.sink.let_in()  # first: what stopping leaves behind must be collectable
        self.kept_out = 0
        try:
            gc.callbacks.remove(self.sink.gc_callback)
        except ValueError:
            pass
        self.monitor.stop()
        self._await_server()
        self.sink.stop()
        if self.fifos is not None:
            self.fifos.remove()

    def _await_server(self) -> None:
        """A program that ends before a watching server found its FIFO (the
        server scans every 50 ms) waits up to ``stop_timeout`` for it, so its
        events are not lost; with no server watching, it does not wait."""
        if self.fifos is None or self.sink.stats().get("connections", 0) > 0:
            return
        directory = os.path.dirname(self.fifos.data)
        if not paths.server_watching(directory):
            return
        deadline = time.monotonic() + self.config.stop_timeout
        while time.monotonic() < deadline and self.sink.stats().get("connections", 0) == 0:
            time.sleep(0.01)


def make_sink(
    config: LeechConfig, header: bytes, data_path: str, control_path: str | None = None, on_connect: Any = None
) -> Sink:
    """The native sink when wanted and loadable, else the pure one."""
    global IMPLEMENTATION
    if config.implementation in ("auto", "native"):
        try:
            native = importlib.import_module(".native", __package__)
            sink: Sink = native.NativeSink(config, header, data_path, control_path, on_connect)
            IMPLEMENTATION = "native"
            return sink
        except Exception as err:  # noqa: BLE001 - any failure of the native library: fall back
            # A stale or foreign build can fail in ways beyond ImportError
            # (a missing symbol is an AttributeError); "auto" must still run.
            if config.implementation == "native":
                raise LeechError(f"the native leech is not available: {err}") from None
            import logging  # only now: the logging package is large, and stays in memory

            logging.getLogger("lpm.leech").info("native leech unavailable, using the Python one: %s", err)
    from .pure import PureSink

    IMPLEMENTATION = "python"
    return PureSink(config, header, data_path, control_path, on_connect)


_lock = threading.Lock()
_active: Leech | None = None


def start(**settings: Any) -> Leech:
    """Start streaming this process's events; returns the running leech.

    Settings are those of :class:`~lpm.leech.config.LeechConfig`; unset ones
    come from ``LPM_*`` environment variables, then the defaults.  Calling it
    again while running returns the running leech unchanged.
    """
    with _lock:
        if _active is not None and _active.pid == os.getpid():
            return _active
        return _start(from_environment(**settings))


def _start(config: LeechConfig) -> Leech:
    global _active
    leech = Leech(config)
    leech.start()
    _active = leech
    _set_sink(leech.sink)
    return leech


def stop() -> None:
    """Flush the last events, write the end marker, and stop.  Safe to call twice."""
    global _active
    with _lock:
        leech, _active = _active, None
        _set_sink(None)
        if leech is not None and leech.pid == os.getpid():
            leech.stop()


def active() -> Leech | None:
    """The running leech of this process, if any."""
    return _active if _active is not None and _active.pid == os.getpid() else None


def _set_sink(sink: Sink | None) -> None:
    from .. import api

    api._sink = sink


def _after_fork_in_child() -> None:
    # The parent's writer thread does not exist here and its FIFOs are the
    # parent's: forget them (without stopping anything) and start afresh.
    global _active
    parent = _active
    _active = None
    _set_sink(None)
    globals()["_lock"] = threading.Lock()
    if parent is not None:
        parent.sink.let_in()
        try:
            gc.callbacks.remove(parent.sink.gc_callback)
        except ValueError:
            pass
        parent.sink.forget_after_fork()
        _start(parent.config)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(stop)

__all__ = ["IMPLEMENTATION", "Leech", "LeechConfig", "active", "make_sink", "start", "stop"]

"""lpm: a live profile monitor for Python programs.

A program streams what its interpreter does, in the GHC eventlog format, to a
monitor that keeps the live state and serves it to remote tools.  This package
needs nothing but the standard library at run time.

>>> import lpm
>>> lpm.start()                     # or: python -m lpm run program.py
>>> lpm.marker("cache warmed")
>>> with lpm.span("request"):
...     ...
>>> lpm.counter("queue depth", 12)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import counter, marker, message, span  # noqa: E402 - the version comes first: submodules import it

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    from typing import Any

    from .leech import Leech


def start(**settings: Any) -> Leech:
    """Start the leech in this process; see :func:`lpm.leech.start`.

    The leech (and the event registry it needs) is imported here, not by
    ``import lpm``: a program that only calls the no-op markers pays nothing.
    """
    from .leech import start as start_leech

    return start_leech(**settings)


def stop() -> None:
    """Stop the leech, writing its last events; see :func:`lpm.leech.stop`."""
    import sys

    leech = sys.modules.get("lpm.leech")
    if leech is not None:
        leech.stop()

__all__ = ["__version__", "counter", "marker", "message", "span", "start", "stop"]

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
from .leech import start, stop  # noqa: E402

__all__ = ["__version__", "counter", "marker", "message", "span", "start", "stop"]

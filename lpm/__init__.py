"""lpm: a live profile monitor for Python programs.

A program streams what its interpreter does, in the GHC eventlog format, to a
monitor that keeps the live state and serves it to remote tools.  This package
needs nothing but the standard library at run time.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

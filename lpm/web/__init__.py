"""The web view's files: one HTML page, its script and its style sheet.

The server's HTTP listener (``python -m lpm server --http HOST:PORT``) serves
them as they are: no build step, no external asset, so the page works on a
machine with no network.  The page reads the listener's JSON API
(``/api/stream``, ``/api/sources``, ``/api/state``, ``/api/flame``) and posts
``/api/pause`` and ``/api/resume``; ``app.js`` opens with what it expects of
each.

The files are package data, read through :mod:`importlib.resources`, so they
are found in a checkout, an installed wheel or a zip alike.
"""

from __future__ import annotations

from importlib import resources
from typing import Dict, Optional, Tuple

#: The files the page is made of, and the Content-Type each is served with.
#: Nothing else is ever read: a request for any other name gets None.
ASSETS: Dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


def asset(name: str) -> Optional[Tuple[bytes, str]]:
    """The bytes and Content-Type of the page's file ``name``, or None when
    ``name`` is not one of :data:`ASSETS` (or the file is missing from a
    broken install).

    Read on every call: the files are small, and an edited file shows on the
    next reload.
    """
    content_type = ASSETS.get(name)
    if content_type is None:
        return None
    try:
        data = resources.files(__name__).joinpath(name).read_bytes()
    except OSError:
        return None
    return data, content_type


__all__ = ["ASSETS", "asset"]

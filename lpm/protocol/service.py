"""Service messages: what a client asks the server, and what it answers.

One JSON object per ``SERVICE`` frame (:mod:`lpm.protocol.frames`), UTF-8, so
any language can speak it.  Four shapes, told apart by ``type``::

    {"type": "request", "id": 7, "op": "subscribe", "sources": [1], "classes": ["gc"]}
    {"type": "reply",   "id": 7, "result": {...}}
    {"type": "error",   "id": 7, "error": "no source 9"}          (id null: not a request)
    {"type": "notice",  "notice": "dropped", "source": 1, "events": 120}

Every request gets exactly one reply or error with its ``id``.  Requests
(:data:`OPS`): ``sources``; ``subscribe`` (``sources``: ids or ``"all"``,
``classes``: event class names or type ids, null for every event);
``unsubscribe``; ``state`` (``source``); ``pause``, ``resume`` (``source``);
``rate`` (``source``, ``hz``); ``resend`` (``source``: its leech starts a new
generation, declaring its code objects again, which a client that joined
mid-stream needs to name its stack samples); ``client`` (what the server sent
this connection: events forwarded and dropped, and over UDP the items its
events channel offered); ``auth`` (``proof``: the answer to the ``challenge``
notice a server with a token sends first, see :func:`proof`); ``secrets``
(``source``: the program's command line and environment unredacted, read
from the running process; only for a client on the server's machine, on a
server with a token); ``trace`` (``source``, ``mode``: "on" or "off", call
tracing in its leech); ``calls`` (``source``, optional ``most``: its traced
call tree, the ``most`` busiest paths).  Notices the server sends unasked:
``dropped`` (a slow client lost events), ``source-added``, ``source-gone``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ..errors import ProtocolError

#: Request operations and the fields each must carry.
OPS: Dict[str, tuple[str, ...]] = {
    "sources": (),
    "subscribe": (),
    "unsubscribe": (),
    "state": ("source",),
    "pause": ("source",),
    "resume": ("source",),
    "rate": ("source", "hz"),
    "resend": ("source",),
    "client": (),
    "auth": ("proof",),
    "secrets": ("source",),
    "trace": ("source", "mode"),
    "calls": ("source",),
}

#: Event classes a subscription can name, by the type ids they hold.
CLASSES: Dict[str, frozenset[int]] = {
    "threads": frozenset({0, 1, 2, 3, 4, 8, 15, 44, 0x1000, 0x1001}),
    "gc": frozenset({9, 10, 11, 12, 20, 21, 22, 53, 54, 0x1002}),
    "heap": frozenset({49, 50, 51, 52, 90, 91, 0x1003}),
    "samples": frozenset({0x1004, 0x1005}),
    "user": frozenset({16, 19, 58, 0x1006, 0x1007, 0x1008}),
    "process": frozenset({25, 26, 27, 28, 29, 30, 31, 32, 33, 43, 0x100B, 0x100C}),
    "loss": frozenset({0x1009, 0x100A, 0x100D}),
    "caps": frozenset({45, 46, 47, 48, 55, 56, 57}),
}

#: The largest service message either side accepts.
MAX_MESSAGE = 1 << 20


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    args: Dict[str, Any] = field(default_factory=dict)


def encode(message: Dict[str, Any]) -> bytes:
    # ASCII: a lone surrogate (bytes a program wrote that are not UTF-8) is
    # escaped, where UTF-8 could not encode it.
    return json.dumps(message, separators=(",", ":")).encode("ascii")


def request(id: int, op: str, **args: Any) -> bytes:
    return encode({"type": "request", "id": id, "op": op, **args})


def reply(id: int, result: Any) -> bytes:
    return encode({"type": "reply", "id": id, "result": result})


def error(id: Optional[int], text: str) -> bytes:
    return encode({"type": "error", "id": id, "error": text})


def notice(kind: str, **fields: Any) -> bytes:
    return encode({"type": "notice", "notice": kind, **fields})


def decode(payload: bytes) -> Dict[str, Any]:
    """One service message as a dict with a known ``type``.

    Raises:
        ProtocolError: not UTF-8 JSON, not an object, too long, or no known type.
    """
    if len(payload) > MAX_MESSAGE:
        raise ProtocolError(0, f"service message of {len(payload)} bytes exceeds {MAX_MESSAGE}")
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ProtocolError(0, f"service message is not UTF-8 JSON: {err}") from None
    except RecursionError:  # [[[[... nested deeper than the parser recurses
        raise ProtocolError(0, "service message nests too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError(0, "service message is not a JSON object")
    if message.get("type") not in ("request", "reply", "error", "notice"):
        raise ProtocolError(0, f"service message has no known type: {message.get('type')!r}")
    return message


def parse_request(message: Dict[str, Any]) -> Request:
    """A request's id, op and arguments, checked.

    Raises:
        ProtocolError: no integer id (the error reply then has id null), or the
            text of an error reply for a bad op or missing field (the reason
            says which).
    """
    id_ = message.get("id")
    if not isinstance(id_, int) or isinstance(id_, bool):
        raise ProtocolError(0, "request without an integer id")
    op = message.get("op")
    if op not in OPS:
        raise BadRequest(id_, f"unknown op {op!r}; ops are: {', '.join(OPS)}")
    args = {k: v for k, v in message.items() if k not in ("type", "id", "op")}
    missing = [name for name in OPS[op] if name not in args]
    if missing:
        raise BadRequest(id_, f"{op} needs {', '.join(missing)}")
    return Request(id_, op, args)


class BadRequest(ProtocolError):
    """A request the server answers with an error reply (its ``id`` known)."""

    def __init__(self, id: int, reason: str) -> None:
        super().__init__(0, reason)
        self.id = id


def class_filter(classes: Any) -> Optional[frozenset[int]]:
    """The type ids a subscription's ``classes`` names; None for every event.

    Raises:
        ValueError: not a list of class names and type ids.
    """
    if classes is None:
        return None
    if not isinstance(classes, list):
        raise ValueError("classes must be a list of class names or type ids")
    ids: set[int] = set()
    for item in classes:
        if isinstance(item, str) and item in CLASSES:
            ids |= CLASSES[item]
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 0xFFFF and item != 18:
            ids.add(item)  # not 18: a block marker's size would not match a filtered stream
        else:
            raise ValueError(f"unknown event class {item!r}; classes are: {', '.join(CLASSES)} or type ids")
    return frozenset(ids)


def proof(token: bytes, nonce_hex: str) -> str:
    """The ``auth`` answer to a ``challenge``: hex HMAC-SHA256 of the nonce
    under the token."""
    import hashlib
    import hmac

    return hmac.new(token, bytes.fromhex(nonce_hex), hashlib.sha256).hexdigest()

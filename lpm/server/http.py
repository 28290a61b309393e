"""HTTP/1.1 for the web view and ``/metrics``, without I/O: bytes in, requests out.

Only what a browser, ``curl`` and Prometheus send: a request line, headers
and an optional ``Content-Length`` body, one request per connection (every
response but an event stream says ``Connection: close``).  Limits keep a
peer from making the server buffer much: :data:`MAX_HEAD` bytes of request
line and headers, :data:`MAX_BODY` of body; past them, and on anything
malformed, :class:`HttpError` carries the status to answer with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_HEAD = 16 << 10
MAX_BODY = 64 << 10

REASONS = {
    200: "OK",
    204: "No Content",
    303: "See Other",
    401: "Unauthorized",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Dict[str, str]
    headers: Dict[str, str]  #: names lower-cased
    body: bytes = b""


@dataclass
class RequestParser:
    """Feeds bytes until one whole request is in."""

    _buf: bytearray = field(default_factory=bytearray)
    _head: Optional[Tuple[str, str, Dict[str, str], Dict[str, str], int]] = None

    def feed(self, data: bytes) -> Optional[Request]:
        """The request, once complete; None until then.

        Raises:
            HttpError: malformed or over a limit (the status says which).
        """
        self._buf += data
        if self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise HttpError(431, f"request head over {MAX_HEAD} bytes")
                return None
            if end > MAX_HEAD:
                raise HttpError(431, f"request head over {MAX_HEAD} bytes")
            self._head = _parse_head(bytes(self._buf[:end]))
            del self._buf[: end + 4]
        method, path, query, headers, length = self._head
        if len(self._buf) < length:
            return None
        return Request(method, path, query, headers, bytes(self._buf[:length]))


def _parse_head(head: bytes) -> Tuple[str, str, Dict[str, str], Dict[str, str], int]:
    lines = head.decode("latin-1").split("\r\n")  # latin-1: every byte decodes, as HTTP/1.1 allows
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, f"not an HTTP/1.x request line: {lines[0][:80]!r}")
    method, target, _ = parts
    if not method.isalpha() or not method.isupper():
        raise HttpError(400, f"bad method {method[:20]!r}")
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, f"bad header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(501, "chunked request bodies are not supported")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise HttpError(400, f"bad Content-Length {length_text[:20]!r}")
    length = int(length_text)
    if length > MAX_BODY:
        raise HttpError(413, f"request body over {MAX_BODY} bytes")
    try:
        url = urlsplit(target)
    except ValueError as err:  # a malformed host: "http://[x/"
        raise HttpError(400, f"bad request target: {err}") from None
    query = {k: v for k, v in parse_qsl(url.query, keep_blank_values=True)}
    return method, unquote(url.path) or "/", query, headers, length


def response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
             headers: Iterable[Tuple[str, str]] = ()) -> bytes:
    """A whole response, after which the connection closes."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close",
             "X-Content-Type-Options: nosniff"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def stream_head() -> bytes:
    """The head of a server-sent events response; events follow as they come."""
    return ("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
            "Connection: keep-alive\r\nX-Content-Type-Options: nosniff\r\n\r\n").encode("latin-1")


def stream_event(name: str, data: str) -> bytes:
    """One server-sent event; ``data`` must hold no newline (JSON does not)."""
    return f"event: {name}\ndata: {data}\n\n".encode("utf-8")


__all__ = ["HttpError", "Request", "RequestParser", "response", "stream_head", "stream_event", "MAX_HEAD", "MAX_BODY"]

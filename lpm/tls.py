"""TLS for the server's TCP and HTTP listeners and for the TCP client.

The standard :mod:`ssl` module only (``../shared/DESIGN.md`` §8).  Two
things a non-blocking selectors loop has to do differently with TLS, kept
here so the TCP and HTTP listeners do them the same way:

- The handshake runs in the loop (:func:`handshake`), waiting on whichever
  of read or write OpenSSL asks for; a peer that never completes it holds
  one client slot, like a peer that never authenticates, and nothing else.
- A read drains what OpenSSL has already decrypted (:func:`recv`): the
  selector sees only the kernel's buffer, so bytes of a record read whole
  but returned in part would otherwise wait for the peer's next packet.

TLS 1.2 is the oldest version offered, as current browsers and Prometheus
do.  Certificates are the user's (``--tls-cert``, ``--tls-key``); a client
verifies the server's against the system's trust store or ``--tls-ca``,
with the host name checked, and there is deliberately no switch to skip
that: a token sent to an unverified peer is a token given away.
"""

from __future__ import annotations

import selectors
import socket
import ssl
from typing import Optional, Union

#: Exceptions that mean "not now": nothing to read, or no room to write.
WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def server_context(cert: str, key: Optional[str] = None) -> ssl.SSLContext:
    """A context for the listeners, from PEM files (``key`` None: in ``cert``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def client_context(ca: Optional[str] = None) -> ssl.SSLContext:
    """A context that verifies the server: against ``ca`` (PEM: a private CA,
    or the server's own self-signed certificate), else the system's store."""
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def wrap_server(context: Optional[ssl.SSLContext], sock: socket.socket) -> socket.socket:
    """An accepted non-blocking socket, as TLS when there is a context; its
    handshake is left to :func:`handshake`."""
    if context is None:
        return sock
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def handshake(sock: ssl.SSLSocket) -> int:
    """Go on with a server-side handshake: 0 once it is done, else the
    selector events to wait for.  Raises :class:`OSError` (an
    :class:`ssl.SSLError`, say) when the peer does not speak TLS or is refused."""
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    return 0


def recv(sock: Union[socket.socket, ssl.SSLSocket], size: int) -> Optional[bytes]:
    """What the peer sent, up to about ``size`` bytes: ``b""`` at its end,
    None when nothing is there yet.  Raises :class:`OSError` when the
    connection broke."""
    try:
        data = sock.recv(size)
    except WOULD_BLOCK:
        return None
    if not data or not isinstance(sock, ssl.SSLSocket):
        return data
    parts = [data]
    # At most the rest of one record: OpenSSL reads no further ahead, so
    # anything after it is still in the kernel's buffer, which the selector sees.
    while sock.pending():
        try:
            more = sock.recv(sock.pending())
        except WOULD_BLOCK:
            break
        if not more:
            break
        parts.append(more)
    return b"".join(parts)


def describe(err: BaseException) -> str:
    """A handshake failure in a few words, for a log line."""
    if isinstance(err, ssl.SSLError) and err.reason:
        return err.reason.lower().replace("_", " ")
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return str(err)

"""The server's sockets, FIFOs and files around :class:`~lpm.server.hub.Hub`.

One thread, one ``selectors`` loop.  Nothing here waits on a peer: every
descriptor is non-blocking, a source is read as soon as it has bytes (so no
program ever waits on its pipe), a client is written only what its socket
takes, and each loop turn reads a bounded amount from each source so one busy
source cannot starve the others.

Sources:

- every leech FIFO pair that appears in the lpm directory (scanned every
  :data:`SCAN_INTERVAL`; only FIFOs this user owns; the leech is asked for a
  fresh header with ``attach``), retired when its program is gone;
- FIFOs named on the command line (a GHC program started with
  ``+RTS -l -ol<fifo>``), retired when their writer closes after writing;
- regular files named on the command line, read to their end;
- recordings replayed at their own pace (``speed`` times real time) or as
  fast as the loop goes.

A FIFO with no writer yet reads as end-of-file; such a source is polled
every :data:`POLL_INTERVAL` until bytes or a writer arrive.
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import logging
import os
import selectors
import socket
import ssl
import stat
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Dict, List, Optional, Tuple

from ..eventlog import format as fmt
from ..eventlog.reader import NEED_DATA, DataEnd, EndOfStream, EventLogReader, Header, RawEvent
from .. import tls
from .. import udp as udp_core
from ..leech import paths
from .hub import Client, Hub, HubLimits
from .source import FIFO, FILE, LEECH, REPLAY, Chunk, Source, header_bytes
from .udp import UdpListener
from .web import WebListener

log = logging.getLogger("lpm.server")

SCAN_INTERVAL = 0.05
POLL_INTERVAL = 0.02
READ_SIZE = 1 << 16
PIPE_SIZE = 1 << 20
READS_PER_TURN = 4
#: Retired sources kept for late clients; older ones are forgotten.
KEEP_RETIRED = 64


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8242
    directory: Optional[str] = None  #: the lpm directory to watch; None: the default
    discover: bool = True
    fifos: List[str] = field(default_factory=list)
    files: List[str] = field(default_factory=list)
    replays: List[str] = field(default_factory=list)
    speed: float = 1.0  #: replay pace; 0: as fast as possible
    record: Optional[str] = None  #: directory to record every source into
    limits: HubLimits = field(default_factory=HubLimits)
    udp: Optional[Tuple[str, int]] = None  #: also serve clients over the UDP transport here
    udp_config: Optional[udp_core.Config] = None
    http: Optional[Tuple[str, int]] = None  #: serve the web view and /metrics here
    token: Optional[bytes] = None  #: every client, on every transport, must prove it
    tls: Optional[ssl.SSLContext] = None  #: TCP clients and the HTTP listener speak TLS (:mod:`lpm.tls`)
    http_interval: float = 1.0  #: seconds between the web view's updates


class _Input:
    """A descriptor feeding a source."""

    def __init__(self, source: Source, fd: int, waiting: bool) -> None:
        self.source = source
        self.fd = fd
        self.waiting = waiting  #: no writer yet (or between writers): polled, not selected
        self.got_data = False


class _Replay:
    """A recording fed to its source at the pace its timestamps set."""

    def __init__(self, source: Source, path: str, speed: float, now: float) -> None:
        self.source = source
        with open(path, "rb") as f:
            self.data = f.read()
        self.reader = EventLogReader(strict=False)
        self.reader.feed(self.data)
        self.reader.close()
        self.speed = speed
        self.started = now
        self.first_ts: Optional[int] = None
        self.held: Optional[RawEvent] = None
        self.done = False

    def due(self, now: float) -> bytes:
        """The bytes whose time has come: headers, events, end markers."""
        out: List[bytes] = []
        size = 0
        while size < READ_SIZE:
            item = self.held if self.held is not None else self.reader.next_raw()
            self.held = None
            if item is NEED_DATA or isinstance(item, EndOfStream):
                self.done = True
                break
            piece = b""
            if isinstance(item, Header):
                piece = header_bytes(item)
            elif isinstance(item, RawEvent):
                if self.speed > 0:
                    if self.first_ts is None:
                        self.first_ts = item.ts
                    if (item.ts - self.first_ts) / 1e9 / self.speed > now - self.started:
                        self.held = item
                        break
                piece = item.raw
            elif isinstance(item, DataEnd):
                piece = fmt.DATA_END
            out.append(piece)
            size += len(piece)
        return b"".join(out)


class Server:
    """``python -m lpm server``: call :meth:`open`, then :meth:`serve` or :meth:`step`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.hub = Hub(config.limits, control=self._control, sink=self._record if config.record else None,
                       token=config.token, secrets=self._secrets)
        self.selector = selectors.DefaultSelector()
        self.listener: Optional[socket.socket] = None
        self.address: tuple[str, int] = (config.host, config.port)
        self._sockets: Dict[int, socket.socket] = {}  # client id -> socket
        self._pending: Dict[int, bytes] = {}  # client id -> bytes taken from the hub, not yet sent
        self._handshaking: set[int] = set()  # client ids whose TLS handshake is not done
        self._inputs: Dict[int, _Input] = {}  # source id -> input
        self._replays: List[_Replay] = []
        self._known: set[str] = set()  # discovered FIFO paths
        self._retired: List[Source] = []
        self._records: Dict[int, tuple[BinaryIO, int]] = {}  # source id -> (file, stream number)
        self._next_scan = 0.0
        self._mark: Optional[str] = None  # the SERVER_MARK file this server wrote
        self._next_poll = 0.0
        self._stop = False
        self.udp: Optional[UdpListener] = None
        self.web: Optional[WebListener] = None

    # -- life -------------------------------------------------------------------

    def open(self) -> None:
        """Bind the listener and open the named sources."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.config.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        sock.listen(64)
        sock.setblocking(False)
        self.listener = sock
        self.address = sock.getsockname()[:2]
        self.selector.register(sock, selectors.EVENT_READ, ("listen", None))
        log.info("listening on %s:%d%s", self.address[0], self.address[1], " (TLS)" if self.config.tls else "")
        if self.config.udp is not None:
            udp_config = self.config.udp_config or udp_core.Config()
            if self.config.token is not None:
                udp_config = dataclasses.replace(udp_config, token=self.config.token)
            self.udp = UdpListener(self.hub, *self.config.udp, config=udp_config)
            self.selector.register(self.udp.sock, selectors.EVENT_READ, ("udp", None))
            log.info("listening on UDP %s:%d", *self.udp.address)
        if self.config.http is not None:
            self.web = WebListener(self.hub, *self.config.http, transports=self._transports,
                                   interval=self.config.http_interval, token=self.config.token, tls=self.config.tls)
            self.selector.register(self.web.sock, selectors.EVENT_READ, ("http", None))
            self.web.on_close = self._unwatch
            log.info("web view and /metrics on %s://%s:%d/", "https" if self.config.tls else "http", *self.web.address)
        if self.config.record:
            os.makedirs(self.config.record, exist_ok=True)
        for path in self.config.fifos:
            self._open_input(path, FIFO, os.path.basename(path))
        for path in self.config.files:
            self._open_input(path, FILE, os.path.basename(path))
        now = time.monotonic()
        for path in self.config.replays:
            source = self.hub.add_source(os.path.basename(path), REPLAY, path)
            if source is not None:
                self._replays.append(_Replay(source, path, self.config.speed, now))

    def stop(self) -> None:
        """Make :meth:`serve` return (from a signal handler or another thread)."""
        self._stop = True

    def close(self) -> None:
        for client_id, sock in list(self._sockets.items()):
            sock.close()
        self._sockets.clear()
        for inp in self._inputs.values():
            os.close(inp.fd)
        self._inputs.clear()
        for handle, _ in self._records.values():
            handle.close()
        self._records.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.udp is not None:
            self.udp.close(time.monotonic())
            self.udp = None
        if self.web is not None:
            self.web.close_all()
            self.web = None
        self.selector.close()
        if self._mark is not None:
            try:
                with open(self._mark) as f:
                    mine = f.read().split()[:1] == [str(os.getpid())]
                if mine:  # another server may have taken over the directory
                    os.unlink(self._mark)
            except (OSError, ValueError):
                pass

    def serve(self) -> None:
        while not self._stop:
            self.step(0.05)

    def step(self, timeout: float) -> None:
        """One turn of the loop: wait at most ``timeout`` seconds for something to do."""
        now = time.monotonic()
        if self.config.discover and now >= self._next_scan:
            self._next_scan = now + SCAN_INTERVAL
            self._scan()
        busy = self._poll_waiting(now) | self._replay(now)
        if self.udp is not None:
            deadline = self.udp.deadline()
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - now))
        for key, mask in self.selector.select(0 if busy else timeout):
            what, ref = key.data
            if what == "listen":
                self._accept()
            elif what == "udp":
                assert self.udp is not None
                self.udp.read(time.monotonic())
            elif what == "http":
                assert self.web is not None
                for sock in self.web.accept():
                    self.selector.register(sock, selectors.EVENT_READ, ("http-conn", sock.fileno()))
            elif what == "http-conn":
                assert self.web is not None
                if mask & selectors.EVENT_READ:
                    self.web.read(ref)
                if mask & selectors.EVENT_WRITE:
                    self.web.write(ref)
            elif what == "client":
                client = self.hub.clients.get(ref)
                if client is None:
                    continue
                if client.id in self._handshaking and not self._client_handshake(client):
                    continue
                if mask & selectors.EVENT_READ:
                    self._client_read(client)
                if mask & selectors.EVENT_WRITE and client.id in self._sockets:
                    self._client_write(client)
            elif what == "source":
                inp = self._inputs.get(ref)
                if inp is not None:
                    self._read_some(inp)
        self._flush_clients()
        if self.udp is not None:
            self.udp.pump(time.monotonic())
        if self.web is not None:
            self._flush_web(time.monotonic())

    # -- sources ------------------------------------------------------------------

    def _scan(self) -> None:
        directory = self.config.directory or paths.lpm_dir()
        try:
            info = os.stat(directory)
        except OSError:
            return
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            log.warning("not watching %s: it is not a private directory of this user", directory)
            self.config.discover = False
            return
        if self._mark is None:
            self._mark = os.path.join(directory, paths.SERVER_MARK)
            try:
                fd = os.open(self._mark + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(f"{os.getpid()}\n")
                os.replace(self._mark + ".tmp", self._mark)
            except OSError as err:
                log.warning("cannot mark %s as watched: %s", directory, err.strerror)
        for path in sorted(glob.glob(os.path.join(directory, "lpm-*" + paths.DATA_SUFFIX))):
            if path in self._known:
                continue
            self._known.add(path)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.getuid():
                log.warning("ignoring %s: not a FIFO of this user", path)
                continue
            pid = _pid_of(path)
            paths.attach(path)
            self._open_input(path, LEECH, f"python-{pid}" if pid else os.path.basename(path), pid)
        self._known &= set(glob.glob(os.path.join(directory, "lpm-*" + paths.DATA_SUFFIX)))

    def _open_input(self, path: str, kind: str, name: str, pid: int | None = None) -> None:
        # A discovered FIFO is opened without following a symlink (what was
        # checked with lstat could have been swapped since), and any FIFO
        # must be this user's: another user's could feed it anything.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if kind == LEECH else 0)
        try:
            fd = os.open(path, flags)
        except OSError as err:
            log.warning("cannot open source %s: %s", path, err.strerror)
            return
        if kind in (LEECH, FIFO):
            st = os.fstat(fd)
            if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.geteuid():
                os.close(fd)
                what = "not a FIFO" if not stat.S_ISFIFO(st.st_mode) else f"a FIFO of uid {st.st_uid}"
                log.warning("refusing source %s: %s, not this user's", path, what)
                return
        source = self.hub.add_source(name, kind, path, pid)
        if source is None:
            os.close(fd)
            return
        if kind != FILE:
            # A deeper pipe: a writer that bursts (a GHC program flushing its
            # capabilities) waits less often for this loop's turn.
            try:
                fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
            except OSError:
                pass  # over /proc/sys/fs/pipe-max-size: keep the default
        log.info("source %d: %s (%s)", source.id, path, kind)
        inp = _Input(source, fd, waiting=kind != FILE)  # a file is read each turn, never selected
        self._inputs[source.id] = inp

    def _poll_waiting(self, now: float) -> bool:
        """Read regular files, and try the FIFOs that had no writer (every
        POLL_INTERVAL); True if one produced bytes."""
        busy = False
        poll = now >= self._next_poll
        if poll:
            self._next_poll = now + POLL_INTERVAL
        for inp in list(self._inputs.values()):
            if inp.source.kind == FILE or (poll and inp.waiting):
                busy |= self._read_some(inp)
        return busy

    def _read_some(self, inp: _Input) -> bool:
        """Read what the input has now (a bounded amount); True if it had bytes."""
        got = False
        for _ in range(READS_PER_TURN):
            try:
                data = os.read(inp.fd, READ_SIZE)
            except BlockingIOError:
                if inp.waiting:  # a writer is there now: wait for its bytes in select()
                    inp.waiting = False
                    self.selector.register(inp.fd, selectors.EVENT_READ, ("source", inp.source.id))
                return got
            except OSError as err:
                log.warning("source %d (%s): read failed: %s", inp.source.id, inp.source.path, err.strerror)
                self._retire(inp)
                return got
            if not data:
                self._at_eof(inp)
                return got
            got = True
            inp.got_data = True
            if inp.waiting:  # a writer is there: from now on select() says when it writes
                inp.waiting = False
                self.selector.register(inp.fd, selectors.EVENT_READ, ("source", inp.source.id))
            self.hub.source_data(inp.source, data)
            self._flush_clients()  # hand it to the sockets before the next read: queues stay short
        return got

    def _at_eof(self, inp: _Input) -> None:
        source = inp.source
        if source.kind == FILE:
            self._retire(inp)
            return
        gone = source.kind == LEECH and (not os.path.exists(source.path) or not _alive(source.pid))
        if (inp.got_data and source.kind == FIFO) or gone:
            self._retire(inp)
            return
        if not inp.waiting:  # the writer left; it may come back (a leech reconnects)
            inp.waiting = True
            self.selector.unregister(inp.fd)

    def _retire(self, inp: _Input) -> None:
        source = inp.source
        if not inp.waiting and source.kind != FILE:
            self.selector.unregister(inp.fd)
        os.close(inp.fd)
        del self._inputs[source.id]
        self.hub.source_closed(source)
        log.info("source %d (%s) ended: %d events, %d bytes", source.id, source.name, source.events_in, source.bytes_in)
        self._close_record(source)
        self._retired.append(source)
        while len(self._retired) > KEEP_RETIRED:
            self.hub.remove_source(self._retired.pop(0))

    def _replay(self, now: float) -> bool:
        busy = False
        for replay in list(self._replays):
            data = replay.due(now)
            if data:
                busy = True
                self.hub.source_data(replay.source, data)
            if replay.done:
                self._replays.remove(replay)
                self.hub.source_closed(replay.source)
                self._close_record(replay.source)
        return busy

    def _control(self, source: Source, line: str) -> Optional[str]:
        if source.kind != LEECH or not source.live:
            return f"source {source.id} ({source.name}) is not a running leech: it takes no commands"
        control = source.path[: -len(paths.DATA_SUFFIX)] + paths.CONTROL_SUFFIX
        try:
            fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            return f"cannot reach the leech of source {source.id}: {err.strerror}"
        try:
            os.write(fd, line.encode() + b"\n")
        except OSError as err:
            return f"cannot reach the leech of source {source.id}: {err.strerror}"
        finally:
            os.close(fd)
        return None

    def _secrets(self, source: Source) -> Dict[str, object]:
        """A live local program's command line and environment as the kernel
        has them (as it was started), for the hub's ``secrets`` op; the
        kernel lets only its user (or root) read them, like this server."""
        pid = source.info().get("pid")
        if source.kind not in (LEECH, FIFO) or not source.live or not isinstance(pid, int):
            raise LookupError(f"source {source.id} ({source.name}) is not a running program on this machine")
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError as err:
            raise LookupError(f"cannot read the command line and environment of pid {pid} "
                              f"(source {source.id}): {err.strerror or err}") from None
        return {
            "pid": pid,
            "args": [a.decode("utf-8", "replace") for a in args if a],
            "env": sorted(e.decode("utf-8", "replace") for e in env if e),
        }

    # -- the recorder ---------------------------------------------------------------

    def _record(self, source: Source, chunk: Chunk) -> None:
        directory = self.config.record
        assert directory is not None
        held = self._records.get(source.id)
        if chunk.header is not None:
            number = 0 if held is None else held[1] + 1
            if held is not None:
                held[0].close()
            suffix = "" if number == 0 else f".{number}"
            name = f"{source.id}-{_safe(source.name)}{suffix}.eventlog"
            handle = open(os.path.join(directory, name), "wb")
            handle.write(chunk.header)
            held = self._records[source.id] = (handle, number)
        if held is None:
            return  # events before any header: nothing a file could hold
        raw = chunk.raw
        if raw:
            held[0].write(raw)
        held[0].flush()

    def _close_record(self, source: Source) -> None:
        held = self._records.pop(source.id, None)
        if held is not None:
            held[0].close()

    # -- clients ----------------------------------------------------------------------

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("accept failed: %s", err)
                return
            client = self.hub.add_client(f"{peer[0]}:{peer[1]}")
            if client is None:
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # The kernel's buffer is queue too: capped, so a client that stops
            # reading is found by its own queue (and memory per client stays
            # bounded), not after megabytes of autotuned send buffer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, min(self.config.limits.queue_bytes, 1 << 20))
            if self.config.tls is not None:
                sock = tls.wrap_server(self.config.tls, sock)
                self._handshaking.add(client.id)
            self._sockets[client.id] = sock
            self.selector.register(sock, selectors.EVENT_READ, ("client", client.id))
            log.info("client %d connected from %s", client.id, client.peer)

    def _client_handshake(self, client: Client) -> bool:
        """Go on with a client's TLS handshake; True once it is done."""
        sock = self._sockets[client.id]
        assert isinstance(sock, ssl.SSLSocket)
        try:
            wait = tls.handshake(sock)
        except OSError as err:
            self._drop_client(client, f"TLS handshake failed: {tls.describe(err)}")
            return False
        if wait:
            self.selector.modify(sock, wait, ("client", client.id))
            return False
        self._handshaking.discard(client.id)
        self.selector.modify(sock, selectors.EVENT_READ, ("client", client.id))
        return True

    def _client_read(self, client: Client) -> None:
        sock = self._sockets[client.id]
        try:
            data = tls.recv(sock, 1 << 16)
        except OSError:
            data = b""
        if data is None:
            return
        if not data:
            self._drop_client(client, "disconnected")
            return
        try:
            self.hub.client_data(client, data)
        except Exception:  # a bug its bytes found: that client goes, the server stays
            log.exception("client %d (%s): internal error on its input; disconnected", client.id, client.peer)
            self._drop_client(client, "internal error")

    def _client_write(self, client: Client) -> None:
        sock = self._sockets[client.id]
        pending = self._pending.get(client.id) or self.hub.take_output(client)
        if not pending:
            return
        try:
            sent = sock.send(pending)
        except tls.WOULD_BLOCK:
            sent = 0
        except OSError as err:
            self._drop_client(client, f"send failed: {err.strerror or err}")
            return
        rest = pending[sent:]
        if rest:
            self._pending[client.id] = rest
        else:
            self._pending.pop(client.id, None)

    def _flush_clients(self) -> None:
        for client in list(self.hub.clients.values()):
            sock = self._sockets.get(client.id)
            if sock is None or client.id in self._handshaking:
                continue
            if client.out and client.id not in self._pending:
                self._client_write(client)
                if client.id not in self._sockets:
                    continue
            wants_write = bool(client.out) or client.id in self._pending
            if client.close_reason is not None and not wants_write:
                self._drop_client(client, client.close_reason)
                continue
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants_write else 0)
            if self.selector.get_key(sock).events != events:
                self.selector.modify(sock, events, ("client", client.id))

    def _flush_web(self, now: float) -> None:
        web = self.web
        assert web is not None
        web.tick(now)
        for fd in list(web.conns):
            if web.wants_write(fd):
                web.write(fd)  # most responses go out whole at once
            conn = web.conns.get(fd)
            if conn is None:
                continue  # closed: unwatched on the way
            events = web.events(fd)
            if self.selector.get_key(conn.sock).events != events:
                self.selector.modify(conn.sock, events, ("http-conn", fd))

    def _unwatch(self, sock: socket.socket) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _transports(self) -> Dict[str, int]:
        """Clients by transport, for /metrics."""
        counts = {"tcp": 0, "udp": 0}
        for client in self.hub.clients.values():
            counts["udp" if client.peer.startswith("udp ") else "tcp"] += 1
        return counts

    def _drop_client(self, client: Client, reason: str) -> None:
        sock = self._sockets.pop(client.id, None)
        self._pending.pop(client.id, None)
        self._handshaking.discard(client.id)
        if sock is not None:
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self.hub.remove_client(client)
        log.info("client %d (%s) gone: %s", client.id, client.peer, reason)


def _pid_of(path: str) -> Optional[int]:
    """The pid in a leech FIFO's name, ``lpm-<pid>-<cookie>.data``."""
    parts = os.path.basename(path).split("-")
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return None


def _alive(pid: Optional[int]) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:64] or "source"


__all__ = ["Server", "ServerConfig"]

"""Where a leech's FIFOs live, made private to the user.

The directory is ``$LPM_DIR``, else ``$XDG_RUNTIME_DIR/lpm``, else
``<tempdir>/lpm-<uid>``.  It is created 0700 and must be a real directory owned
by this user with no access for anyone else: a directory planted by another
user, or a symlink, is refused rather than used.  Each process makes two FIFOs
there, mode 0600, named ``lpm-<pid>-<cookie>.data`` (events out) and
``.ctl`` (commands in), where the cookie is random so that a recycled pid never
collides with a stale file.
"""

from __future__ import annotations

import os
import stat

from ..errors import LeechError

DATA_SUFFIX = ".data"
CONTROL_SUFFIX = ".ctl"


def lpm_dir() -> str:
    """The lpm directory this user's processes and servers agree on."""
    explicit = os.environ.get("LPM_DIR")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "lpm")
    # Not tempfile.gettempdir(): importing tempfile costs every profiled
    # program thousands of objects its collections would scan forever.
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", f"lpm-{os.getuid()}")


def private_dir(path: str) -> str:
    """Create ``path`` 0700 if needed and check that it is private.

    Raises:
        LeechError: it is a symlink, not a directory, not ours, or open to
            others.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise LeechError(f"cannot create the lpm directory {path}: {err.strerror}") from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise LeechError(f"{path} is not a directory (a symlink or file is there); refusing to use it")
    if st.st_uid != os.getuid():
        raise LeechError(f"{path} belongs to uid {st.st_uid}, not to this user; refusing to use it")
    if st.st_mode & 0o077:
        raise LeechError(f"{path} is accessible to other users (mode {stat.S_IMODE(st.st_mode):o}); refusing to use it")
    return path


class FifoPair:
    """The two FIFOs of one leech."""

    __slots__ = ("data", "control")

    def __init__(self, data: str, control: str) -> None:
        self.data = data
        self.control = control

    def __repr__(self) -> str:
        return f"FifoPair({self.data!r}, {self.control!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FifoPair) and (self.data, self.control) == (other.data, other.control)

    def __hash__(self) -> int:
        return hash((self.data, self.control))

    def remove(self) -> None:
        for path in (self.data, self.control):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


#: A server watching a directory says so with this file (its pid inside), so
#: that a program ending before the server found it waits a moment for it.
SERVER_MARK = "lpm-server.pid"


def server_watching(directory: str) -> bool:
    """Whether a live server says it watches ``directory``."""
    try:
        with open(os.path.join(directory, SERVER_MARK), "rb") as f:
            pid = int(f.read().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def make_fifos(directory: str | None = None) -> FifoPair:
    """Create this process's data and control FIFOs, 0600, in a private directory."""
    directory = private_dir(directory or lpm_dir())
    base = os.path.join(directory, f"lpm-{os.getpid()}-{os.urandom(6).hex()}")
    pair = FifoPair(base + DATA_SUFFIX, base + CONTROL_SUFFIX)
    old = os.umask(0o077)
    try:
        for path in (pair.data, pair.control):
            os.mkfifo(path, 0o600)
    except OSError as err:
        pair.remove()
        raise LeechError(f"cannot create FIFO {path}: {err.strerror}") from None
    finally:
        os.umask(old)
    return pair


def attach(data_path: str) -> bool:
    """Tell the leech behind data FIFO ``data_path`` that a new reader is about
    to open it, so that, if an earlier reader still holds the pipe, it sends a
    fresh header next (bytes the earlier reader left in the pipe come before
    it, and a reader skips them).  Call it *before* opening the data FIFO.
    False when ``data_path`` is not a leech's FIFO or its leech is gone."""
    if not data_path.endswith(DATA_SUFFIX):
        return False
    control = data_path[: -len(DATA_SUFFIX)] + CONTROL_SUFFIX
    try:
        fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, b"attach\n")
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def open_reader(data_path: str) -> int:
    """Attach to a leech's data FIFO and open it for reading; returns a
    blocking descriptor once the leech has connected (like ``open``, this waits
    for a writer)."""
    attach(data_path)
    # The non-blocking read end lets the leech's non-blocking open succeed;
    # the blocking open then returns as soon as it has.
    probe = os.open(data_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return os.open(data_path, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(probe)

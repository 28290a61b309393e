"""The exceptions lpm raises.

::

    LpmError
    ├── FormatError      bytes that are not a valid eventlog (also a ValueError)
    ├── ProtocolError    a peer broke the client/server protocol
    ├── LeechError       the native leech reported a failure
    └── CommandError     a command-line failure with its exit status
"""

from __future__ import annotations


class LpmError(Exception):
    """Base class of every error lpm raises on purpose."""


class FormatError(LpmError, ValueError):
    """Input that is not a valid eventlog.

    Attributes:
        offset: the byte offset in the stream where the problem was found.
        reason: what was wrong, without the offset.
    """

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"at byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class ProtocolError(LpmError):
    """A peer sent something the protocol does not allow.

    Attributes:
        offset: the byte offset in that peer's stream.
        reason: what was wrong.
    """

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"at byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class LeechError(LpmError):
    """The native leech could not be loaded or reported an error."""


class CommandError(LpmError):
    """A command-line failure; ``exit_code`` is the process exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

"""Payload layouts: a short string per event type that says how its fields sit.

A layout is a string of field codes (spaces are ignored)::

    B H I Q   unsigned 8, 16, 32, 64-bit integer
    q         signed 64-bit integer
    d         IEEE 754 double
    s         NUL-terminated string
    t         string running to the end of the payload
    y         raw bytes running to the end of the payload
    S         NUL-terminated strings, one after another, to the end
    a         u8 count, then that many u32 (GHC's cost-centre stacks)
    i         u32s running to the end of the payload

Text is UTF-8 and is decoded with ``surrogateescape``, so bytes that are not
UTF-8 survive a decode and re-encode unchanged: a reader never loses what a
program wrote, and the writer reproduces it byte for byte.  ``y`` is for
payloads GHC defines as bytes (binary user messages).
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see catalog.py)
    from typing import Any, Callable, Sequence, Union

    Value = Union[int, float, str, bytes, "tuple[str, ...]", "tuple[int, ...]"]
else:
    Value = object  # only annotations name it, and they are not evaluated

_FIXED = "BHIQqd"
_TAILS = "tySi"  # codes that consume the rest of the payload, so must come last
_ALL = _FIXED + "sa" + _TAILS
_U8 = struct.Struct(">B")


class LayoutError(ValueError):
    """A payload does not fit its layout (too short, unterminated string)."""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _utf8(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


class Layout:
    """A compiled layout: decodes a payload to a tuple and encodes it back.

    Attributes:
        codes: the layout string without spaces.
        fixed: the ``struct.Struct`` of the whole payload when every field is
            fixed-size, else ``None``.
        size: the payload size when fixed, else ``None``.
        min_size: the fewest bytes a payload of this layout can have.
    """

    __slots__ = ("codes", "fixed", "size", "min_size", "_steps")

    def __init__(self, codes: str) -> None:
        codes = codes.replace(" ", "")
        for n, code in enumerate(codes):
            if code not in _ALL:
                raise ValueError(f"unknown field code {code!r} in layout {codes!r}")
            if code in _TAILS and n != len(codes) - 1:
                raise ValueError(f"field code {code!r} must come last in layout {codes!r}")
        self.codes = codes
        self._steps: list[tuple[str, struct.Struct | None]] = []
        run = ""
        for code in codes:
            if code in _FIXED:
                run += code
                continue
            if run:
                self._steps.append(("fixed", struct.Struct(">" + run)))
                run = ""
            self._steps.append((code, None))
        if run:
            self._steps.append(("fixed", struct.Struct(">" + run)))
        if all(code in _FIXED for code in codes):
            self.fixed: struct.Struct | None = struct.Struct(">" + codes)
            self.size: int | None = self.fixed.size
        else:
            self.fixed = None
            self.size = None
        self.min_size = sum(
            st.size if st is not None else (1 if code in "sa" else 0) for code, st in self._steps
        )

    def __len__(self) -> int:
        """The number of fields."""
        return len(self.codes)

    def __repr__(self) -> str:
        return f"Layout({self.codes!r})"

    def decode(self, buf: bytes | bytearray | memoryview, start: int, end: int) -> tuple[Value, ...]:
        """Decode the payload ``buf[start:end]``.

        Bytes past the last field of a fixed layout are ignored: they are the
        tail of a newer, longer version of the same event.

        Raises:
            LayoutError: the payload is too short or a string is unterminated.
        """
        if self.fixed is not None:
            if end - start < self.fixed.size:
                raise LayoutError(f"payload of {end - start} bytes, layout {self.codes!r} needs {self.fixed.size}")
            return self.fixed.unpack_from(buf, start)
        out: list[Value] = []
        pos = start
        for code, st in self._steps:
            if st is not None:
                if end - pos < st.size:
                    raise LayoutError(f"payload ends inside the fixed fields of layout {self.codes!r}")
                out.extend(st.unpack_from(buf, pos))
                pos += st.size
            elif code == "s":
                nul = bytes(buf[pos:end]).find(b"\x00")
                if nul < 0:
                    raise LayoutError("unterminated string")
                out.append(_text(bytes(buf[pos : pos + nul])))
                pos += nul + 1
            elif code == "a":
                if pos >= end:
                    raise LayoutError("payload ends before an array count")
                (count,) = _U8.unpack_from(buf, pos)
                pos += 1
                if end - pos < 4 * count:
                    raise LayoutError(f"array of {count} u32 runs past the payload")
                out.append(struct.unpack_from(f">{count}I", buf, pos))
                pos += 4 * count
            elif code == "t":
                out.append(_text(bytes(buf[pos:end])))
                pos = end
            elif code == "y":
                out.append(bytes(buf[pos:end]))
                pos = end
            elif code == "S":
                raw = bytes(buf[pos:end])
                if raw and not raw.endswith(b"\x00"):
                    raise LayoutError("unterminated string in a string list")
                out.append(tuple(_text(part) for part in raw.split(b"\x00")[:-1]))
                pos = end
            else:  # "i"
                if (end - pos) % 4:
                    raise LayoutError("u32 array is not a whole number of u32")
                out.append(struct.unpack_from(f">{(end - pos) // 4}I", buf, pos))
                pos = end
        return tuple(out)

    def encode(self, values: Sequence[Value]) -> bytes:
        """Encode field values in layout order.

        Raises:
            ValueError: wrong number or type of values, or a value that does not
                fit its field.
        """
        if len(values) != len(self.codes):
            raise ValueError(f"layout {self.codes!r} has {len(self.codes)} fields, got {len(values)} values")
        if self.fixed is not None:
            try:
                return self.fixed.pack(*values)
            except struct.error as err:
                raise ValueError(f"values do not fit layout {self.codes!r}: {err}") from None
        parts: list[bytes] = []
        i = 0
        for code, st in self._steps:
            if st is not None:
                n = len(st.format) - 1
                try:
                    parts.append(st.pack(*values[i : i + n]))
                except struct.error as err:
                    raise ValueError(f"values do not fit layout {self.codes!r}: {err}") from None
                i += n
                continue
            value = values[i]
            i += 1
            try:
                parts.append(_ENCODERS[code](value))
            except struct.error as err:
                raise ValueError(f"values do not fit layout {self.codes!r}: {err}") from None
        return b"".join(parts)


def _enc_cstring(value: Value) -> bytes:
    raw = _utf8(_want(value, str))
    if b"\x00" in raw:
        raise ValueError("a NUL-terminated string field cannot contain NUL")
    return raw + b"\x00"


def _enc_array(value: Value) -> bytes:
    items = _want(value, tuple)
    if len(items) > 255:
        raise ValueError("a u8-counted array holds at most 255 items")
    return _U8.pack(len(items)) + struct.pack(f">{len(items)}I", *items)


def _enc_strings(value: Value) -> bytes:
    return b"".join(_enc_cstring(item) for item in _want(value, tuple))


def _enc_u32s(value: Value) -> bytes:
    items = _want(value, tuple)
    return struct.pack(f">{len(items)}I", *items)


def _want(value: Value, kind: type) -> Any:
    if not isinstance(value, kind):
        raise ValueError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


_ENCODERS: dict[str, Callable[[Value], bytes]] = {
    "s": _enc_cstring,
    "t": lambda v: _utf8(_want(v, str)),
    "y": lambda v: bytes(_want(v, bytes)),
    "S": _enc_strings,
    "a": _enc_array,
    "i": _enc_u32s,
}

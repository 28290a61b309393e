"""The GHC eventlog binary format, as lpm reads and writes it.

Grammar (every integer big-endian)::

    eventlog   := "hdrb" "hetb" event_type* "hete" "hdre" "datb" event* data_end?
    event_type := "etb\\0" id:u16 size:u16 desc_len:u32 desc extra_len:u32 extra "ete\\0"
    event      := id:u16 ts_ns:u64 [len:u16 if size == 0xffff] payload
    data_end   := 0xffff                      (in the id slot: two bytes)

``size`` is the payload size of every event of that type, or 0xffff when each
event carries its own u16 length.  A block marker (id 18, fixed 14 bytes:
``size:u32 end_ts:u64 cap:u16``) opens each buffer the runtime flushes; the
events inside it (``size`` bytes counted from the marker's own first byte)
belong to capability ``cap``, and 0xffff means the global buffer.  Timestamps
are nanoseconds since the program started.

Rules for evolving the format, which lpm keeps and expects others to keep:

1. Ids are never reused; a type's fields are only ever appended.
2. A reader frames every event by the size its header declares, so it can skip
   declared-but-unknown types and the tail of a newer, longer layout.
3. A stream may stop without ``data_end`` (a killed program), and may be
   followed by a fresh ``hdrb`` (a restarted writer); bytes before a header are
   skipped until ``hdrb``.

lpm's own Python events live in :data:`LPM_ID_FIRST` .. :data:`LPM_ID_LAST`, far
above every id GHC has used, so no GHC release will collide with them.

To add an event type: pick the next free id in the lpm range, add its class to
``lpm/eventlog/events.py`` with a layout and a description, add the id to the
table in ``leech.c``, and extend the round-trip tests' value generator if the
layout uses a new field code.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see catalog.py)
    from typing import Final, Iterable

HEADER_BEGIN: Final = b"hdrb"
HEADER_END: Final = b"hdre"
HET_BEGIN: Final = b"hetb"
HET_END: Final = b"hete"
ET_BEGIN: Final = b"etb\x00"
ET_END: Final = b"ete\x00"
DATA_BEGIN: Final = b"datb"
DATA_END: Final = b"\xff\xff"

#: Declared size meaning "each event carries a u16 payload length".
VARIABLE: Final = 0xFFFF
#: The block marker's capability number for the runtime's global buffer.
GLOBAL_CAP: Final = 0xFFFF
#: The block marker's id; it is framed like any event but has a fixed meaning.
BLOCK_MARKER_ID: Final = 18

#: First and last ids of lpm's own (Python) event types.
LPM_ID_FIRST: Final = 0x1000
LPM_ID_LAST: Final = 0x10FF

# - 2 bytes event type id
# - 8 bytes timestamp, ns since program start
EVENT_HEAD: Final = struct.Struct(">HQ")
# - 2 bytes payload length, present only for variable-size types
PAYLOAD_LEN: Final = struct.Struct(">H")
# - 4 bytes "etb\0", 2 bytes id, 2 bytes size, 4 bytes description length
ET_HEAD: Final = struct.Struct(">4sHHI")
U32: Final = struct.Struct(">I")
# - 4 bytes block size (marker included), 8 bytes end timestamp, 2 bytes cap
BLOCK_MARKER: Final = struct.Struct(">IQH")

#: The largest payload a variable-size event can carry (its length is a u16;
#: 0xffff itself is a valid length).
MAX_PAYLOAD: Final = 0xFFFF
#: The largest complete event: head, length, payload.  Nothing the reader holds
#: while waiting for the rest of an event is larger than this.
MAX_EVENT: Final = EVENT_HEAD.size + PAYLOAD_LEN.size + MAX_PAYLOAD
#: Limits on a header, whose lengths are u32 and could otherwise ask the reader
#: to buffer gigabytes: GHC's longest description is under 60 bytes and its
#: extra field is always empty, and GHC 9.0.2 declares 69 types in 2,688 bytes.
MAX_DESCRIPTION: Final = 4096
MAX_EXTRA: Final = 65536
#: A whole header's bytes at most: GHC's and lpm's are tens of KiB; a source
#: declaring ever more types must not make a reader hold gigabytes.
MAX_HEADER: Final = 4 << 20
#: Ids are u16, so a header can hold at most this many distinct types.
MAX_EVENT_TYPES: Final = 0x10000

#: Header sizes that some GHC release declares wrongly, mapped to the size its
#: runtime really writes (eventlog-format.md §2.6): one generated table gave
#: TASK_CREATE a 4-byte thread id where the runtime writes a u64 kernel tid, and
#: TICKY_COUNTER_BEGIN_SAMPLE four u64s where the runtime writes nothing.
SIZE_QUIRKS: Final[dict[tuple[int, int], int]] = {
    (55, 14): 18,
    (212, 32): 0,
}


def encode_header(types: Iterable[tuple[int, int, str, bytes]]) -> bytes:
    """``hdrb hetb (etb ...)* hete hdre datb``, everything before the first event,
    from (id, declared size, description, extra) per type."""
    parts = [HEADER_BEGIN, HET_BEGIN]
    for type_id, size, description, extra in sorted(types):
        desc = description.encode("utf-8")
        parts += [ET_HEAD.pack(ET_BEGIN, type_id, size, len(desc)), desc, U32.pack(len(extra)), extra, ET_END]
    parts += [HET_END, HEADER_END, DATA_BEGIN]
    return b"".join(parts)

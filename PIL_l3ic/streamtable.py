"""The compact stream table of version 3 files (docs/format.md): stream lengths as LEB128
varints, then one CRC-32 per group of GROUP consecutive streams.

An hp file has hundreds of streams, many of them empty or a few bytes long; the 9-byte entries
of versions 1 and 2 (mode, u32 length, CRC-32 each) would cost ~0.09 bpp at 512x512 with 320
streams, this table ~0.005 bpp. Stdlib only; the container does the I/O.
"""
from __future__ import annotations

import struct
import zlib
from typing import Sequence

GROUP = 16                 # streams per CRC-32
MAX_VARINT = 5             # bytes of a u32 in LEB128
_U32 = 0xFFFFFFFF
_CRC = struct.Struct("<I")


class TableError(ValueError):
    """The table is malformed (the container turns this into a ContainerError)."""


class TableTruncated(TableError):
    """The table runs past the end of the data given."""


def groups(count: int) -> int:
    return -(-count // GROUP)


def max_size(count: int) -> int:
    """Bytes the table of ``count`` streams can take at most."""
    return count * MAX_VARINT + groups(count) * _CRC.size


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pack(streams: Sequence[bytes]) -> bytes:
    """The table of these streams (their lengths and group CRCs)."""
    out = [b"".join(_varint(len(s)) for s in streams)]
    for g in range(groups(len(streams))):
        crc = 0
        for s in streams[g * GROUP:(g + 1) * GROUP]:
            crc = zlib.crc32(s, crc)
        out.append(_CRC.pack(crc))
    return b"".join(out)


def parse(buf: bytes, count: int) -> tuple[list[int], list[int], int]:
    """(lengths, group CRCs, bytes used) of a table at the start of ``buf``. Varints must be
    canonical (no redundant 0x80 continuation, at most MAX_VARINT bytes, value <= 2^32 - 1)."""
    lengths, pos = [], 0
    for i in range(count):
        value, shift = 0, 0
        while True:
            if pos >= len(buf):
                raise TableTruncated("stream table is truncated")
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= 7 * MAX_VARINT:
                raise TableError(f"stream {i}: length varint longer than {MAX_VARINT} bytes")
        if (b == 0 and shift > 7) or value > _U32:
            raise TableError(f"stream {i}: length varint is not canonical or exceeds 2^32 - 1")
        lengths.append(value)
    n = groups(count)
    if pos + n * _CRC.size > len(buf):
        raise TableTruncated("stream table is truncated (group CRCs)")
    crcs = [_CRC.unpack_from(buf, pos + g * _CRC.size)[0] for g in range(n)]
    return lengths, crcs, pos + n * _CRC.size

"""The ``.l3c`` container: bytes <-> header + channel streams + chunks (stdlib only).

Every byte is documented in docs/format.md.  All integers are little-endian.

Exceptions (Pillow conventions)
    NotL3icError(SyntaxError)         bad magic: not our format.
    ContainerError(OSError)           our format but invalid / corrupt / unsupported version;
    TruncatedError(ContainerError)    the message says what is wrong.  Truncated: data ends
    ChecksumError(ContainerError)     before a declared structure; Checksum: a CRC32 mismatch.

Data classes (frozen)
    Header(width, height, mode, model_id, fingerprint): validated on construction (ValueError);
        derived: channels (MODEL_CHANNELS[model_id]), latent_h = ceil(height/8),
        latent_w = ceil(width/8), n_symbols = latent_h * latent_w, size, has_alpha.
    ChannelEntry(mode, offset, length, crc32) and ChunkEntry(type, offset, length, crc32):
        offsets are relative to the container start; ChunkEntry.critical: type[0] is upper case.
    Layout(header, channels, chunks, icc, exif, xmp, base, header_length, end, file_size):
        chunks lists every directory entry; icc/exif/xmp are bytes or None, already read and
        CRC-checked; base is the stream position of byte 0; end the declared total length;
        file_size the bytes available from base (None if unknown).  Properties: alpha
        (ChunkEntry or None), truncated (file shorter than end), missing (indices of channels
        extending past the end of the file).

Functions
    accept(prefix) -> bool                      for the plugin's ``_accept``.
    pack(header, channel_streams, channel_modes, *, icc=None, exif=None, xmp=None, alpha=None)
        -> bytes.  ValueError on bad arguments; alpha is required iff header.has_alpha.
        Writes version 2 when a channel uses STREAM_TANS_CTX, else version 1 (docs/format.md).
    read_layout(fp) -> Layout    reads header, channel table, chunk directory and icc/exif/xmp
        only (never a channel stream or the alpha plane).  fp: seekable binary file positioned
        at the container start.  A file truncated inside the channel streams or alpha plane
        still gives a Layout (layout.truncated), so the plugin can honour LOAD_TRUNCATED_IMAGES.
    read_channel(fp, layout, index) -> bytes    one stream, CRC-checked (raises).
    read_channels(fp, layout, *, allow_truncated=False) -> list[bytes | None]
        with allow_truncated, missing or corrupt channels are None instead of raising.
    read_alpha(fp, layout, *, allow_truncated=False) -> bytes | None   (None: no ALPH chunk or,
        with allow_truncated, a missing/corrupt one).
    unpack(data, *, allow_truncated=False) -> (Layout, list[bytes | None], bytes | None)

No read or allocation is ever sized by an untrusted field before that field has been checked
against the limits (MAX_*) and against the size of the file.
"""
from __future__ import annotations

import operator
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import BinaryIO, Sequence

from . import streamtable

MAGIC = b"\x89L3C\r\n\x1a\n"
VERSION = 3                # the newest version this module reads and writes
VERSIONS = (1, 2, 3)       # versions it reads; pack writes the lowest that holds the file
MODES = {"RGB": 1, "L": 2, "RGBA": 3, "LA": 4}
_MODE_NAMES = {v: k for k, v in MODES.items()}
ALPHA_MODES = frozenset({"RGBA", "LA"})
MODEL_CHANNELS = {1: 16, 2: 32, 3: 64}   # the release 0.1.0 models (versions 1 and 2)
HP_MODEL_ID = 4            # the hyperprior family (version 3): geometry stored in the header
HP_STRIDES = (8, 16)       # latent stride of an hp model; z is 4x below the latent
MAX_LEVEL = 0xFFFF         # the rate level, in 1/LEVEL_ONE units
LEVEL_ONE = 4096
STREAM_TANS, STREAM_RUN, STREAM_RAW, STREAM_TANS_CTX, STREAM_CLASS = 0, 1, 2, 3, 4
# stream modes allowed in the channel table of each version (3, context tANS, from version 2;
# 4, class-coded with the model's static tables, in version 3 only)
_STREAM_MODES = {1: frozenset({STREAM_TANS, STREAM_RUN, STREAM_RAW}),
                 2: frozenset({STREAM_TANS, STREAM_RUN, STREAM_RAW, STREAM_TANS_CTX}),
                 3: frozenset({STREAM_CLASS})}

CHUNK_ICC, CHUNK_EXIF, CHUNK_XMP, CHUNK_ALPHA = b"iccp", b"exif", b"xmpm", b"ALPH"
_METADATA_CHUNKS = (CHUNK_ICC, CHUNK_EXIF, CHUNK_XMP)
_KNOWN_CRITICAL = frozenset({CHUNK_ALPHA})

MAX_DIMENSION = 65535
MAX_CHANNELS = 256         # versions 1 and 2
MAX_CHANNELS_V3 = 1024
MAX_CHUNKS = 16
MAX_METADATA = 16 << 20
_U32 = 0xFFFFFFFF
_READ_BLOCK = 1 << 20

# magic, version, mode, model_id, n_chunks, width, height, latent_h, latent_w, channels, fingerprint
_FIXED = struct.Struct("<8sBBBBIIHHH8s")   # 34 bytes
_HP = struct.Struct("<HHBB")               # version 3: level, z_channels, stride, reserved
_CHANNEL = struct.Struct("<BII")           # mode, length, crc32: 9 bytes
_CHUNK = struct.Struct("<4sII")            # type, length, crc32: 12 bytes
_CRC = struct.Struct("<I")


class NotL3icError(SyntaxError):
    """The data does not start with the l3ic magic: not our format."""


class ContainerError(OSError):
    """The data is an l3ic container but is invalid, corrupt or unsupported."""


class TruncatedError(ContainerError):
    """The data ends before a structure it declares."""


class ChecksumError(ContainerError):
    """A CRC32 (header, channel stream or chunk) does not match."""


_HP_FIELDS = ("level", "z_channels", "y_channels", "stride")


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    mode: str
    model_id: int
    fingerprint: bytes
    # hp models (model_id HP_MODEL_ID, version 3) only; None for the others
    level: int | None = None          # rate level x LEVEL_ONE
    z_channels: int | None = None
    y_channels: int | None = None
    stride: int | None = None

    def __post_init__(self):
        try:  # normalise numpy integers / bytearray; reject floats and str
            for name in ("width", "height", "model_id"):
                object.__setattr__(self, name, operator.index(getattr(self, name)))
            for name in _HP_FIELDS:
                if getattr(self, name) is not None:
                    object.__setattr__(self, name, operator.index(getattr(self, name)))
            if not isinstance(self.fingerprint, (bytes, bytearray, memoryview)):
                raise TypeError
            object.__setattr__(self, "fingerprint", bytes(self.fingerprint))
        except TypeError:
            raise ValueError(f"bad field type in {self!r}") from None
        for name in ("width", "height"):
            if not 1 <= getattr(self, name) <= MAX_DIMENSION:
                raise ValueError(f"{name} {getattr(self, name)} outside 1..{MAX_DIMENSION}")
        if self.mode not in MODES:
            raise ValueError(f"unsupported mode {self.mode!r}")
        if len(self.fingerprint) != 8:
            raise ValueError("fingerprint must be 8 bytes")
        hp = [getattr(self, n) for n in _HP_FIELDS]
        if self.model_id in MODEL_CHANNELS:
            if any(v is not None for v in hp):
                raise ValueError(f"model {self.model_id} takes no hp fields")
            return
        if self.model_id != HP_MODEL_ID:
            raise ValueError(f"unknown model id {self.model_id}")
        if any(v is None for v in hp):
            raise ValueError("an hp model needs level, z_channels, y_channels and stride")
        if not 0 <= self.level <= MAX_LEVEL:
            raise ValueError(f"level {self.level} outside 0..{MAX_LEVEL}")
        if self.stride not in HP_STRIDES:
            raise ValueError(f"stride {self.stride} not one of {HP_STRIDES}")
        if self.z_channels < 1 or self.y_channels < 1 \
                or self.z_channels + self.y_channels > MAX_CHANNELS_V3:
            raise ValueError(f"{self.z_channels} z and {self.y_channels} y channels: each at "
                             f"least 1, together at most {MAX_CHANNELS_V3}")

    @property
    def version(self) -> int:
        """3 for hp models; 1 or 2 (chosen by pack) for the others."""
        return 3 if self.model_id == HP_MODEL_ID else 1

    @property
    def channels(self) -> int:
        """Entropy streams: the latent channels, for hp models z's then y's."""
        if self.model_id == HP_MODEL_ID:
            return self.z_channels + self.y_channels
        return MODEL_CHANNELS[self.model_id]

    @property
    def latent_h(self) -> int:
        if self.model_id == HP_MODEL_ID:
            return 4 * -(-self.height // (4 * self.stride))
        return (self.height + 7) // 8

    @property
    def latent_w(self) -> int:
        if self.model_id == HP_MODEL_ID:
            return 4 * -(-self.width // (4 * self.stride))
        return (self.width + 7) // 8

    @property
    def n_symbols(self) -> int:
        """Symbols in each channel stream (latent_h * latent_w)."""
        return self.latent_h * self.latent_w

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def has_alpha(self) -> bool:
        return self.mode in ALPHA_MODES


@dataclass(frozen=True)
class ChannelEntry:
    mode: int
    offset: int
    length: int
    crc32: int


@dataclass(frozen=True)
class ChunkEntry:
    type: bytes
    offset: int
    length: int
    crc32: int

    @property
    def critical(self) -> bool:
        return not self.type[0] & 0x20


@dataclass(frozen=True)
class Layout:
    header: Header
    channels: tuple[ChannelEntry, ...]
    chunks: tuple[ChunkEntry, ...]
    icc: bytes | None
    exif: bytes | None
    xmp: bytes | None
    base: int
    header_length: int
    end: int
    file_size: int | None
    groups: tuple[ChannelEntry, ...] = ()   # version 3: the CRC groups of GROUP channels

    @property
    def alpha(self) -> ChunkEntry | None:
        return next((c for c in self.chunks if c.type == CHUNK_ALPHA), None)

    @property
    def truncated(self) -> bool:
        return self.file_size is not None and self.file_size < self.end

    @property
    def missing(self) -> tuple[int, ...]:
        """Indices of channels that extend past the end of the file."""
        if self.file_size is None:
            return ()
        return tuple(i for i, c in enumerate(self.channels)
                     if c.offset + c.length > self.file_size)


def accept(prefix: bytes) -> bool:
    """True when ``prefix`` (Pillow passes the first 16 bytes) starts with the l3ic magic."""
    return prefix[:8] == MAGIC


def _valid_type(ctype: bytes) -> bool:
    return isinstance(ctype, bytes) and len(ctype) == 4 and ctype.isalpha() and ctype.isascii()


def pack(header: Header, channel_streams: Sequence[bytes], channel_modes: Sequence[int], *,
         icc: bytes | None = None, exif: bytes | None = None, xmp: bytes | None = None,
         alpha: bytes | None = None, extra_chunks: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """Serialise a container.  ``extra_chunks`` ((type, data) pairs, written after the metadata
    chunks and before ALPH) exists for tests and forward compatibility."""
    n = header.channels
    if len(channel_streams) != n or len(channel_modes) != n:
        raise ValueError(f"model {header.model_id} needs {n} channel streams and modes, got "
                         f"{len(channel_streams)} and {len(channel_modes)}")
    if header.has_alpha != (alpha is not None):
        raise ValueError(f"mode {header.mode} {'requires' if header.has_alpha else 'forbids'}"
                         " an alpha plane")
    chunks: list[tuple[bytes, bytes]] = []
    for ctype, data in ((CHUNK_ICC, icc), (CHUNK_EXIF, exif), (CHUNK_XMP, xmp),
                        *extra_chunks, (CHUNK_ALPHA, alpha)):
        if data is None:
            continue
        data = bytes(data)
        if not _valid_type(ctype):
            raise ValueError(f"invalid chunk type {ctype!r}")
        if any(ctype == t for t, _ in chunks):
            raise ValueError(f"duplicate chunk {ctype!r}")
        limit = MAX_METADATA if ctype in _METADATA_CHUNKS else _U32
        if len(data) > limit:
            raise ValueError(f"chunk {ctype!r} is {len(data)} bytes, limit {limit}")
        chunks.append((ctype, data))
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"{len(chunks)} chunks, limit {MAX_CHUNKS}")
    streams = [bytes(s) for s in channel_streams]
    version = header.version
    if version == 1 and STREAM_TANS_CTX in channel_modes:
        version = 2
    for mode in channel_modes:
        if mode not in _STREAM_MODES[version]:
            raise ValueError(f"invalid stream mode {mode!r} for a version {version} file")
    out = [_FIXED.pack(MAGIC, version, MODES[header.mode], header.model_id, len(chunks),
                       header.width, header.height, header.latent_h, header.latent_w, n,
                       header.fingerprint)]
    if any(len(s) > _U32 for s in streams):
        raise ValueError("channel stream longer than 4 GiB")
    if version == 3:
        out.append(_HP.pack(header.level, header.z_channels, header.stride, 0))
        out.append(streamtable.pack(streams))
    else:
        out.extend(_CHANNEL.pack(mode, len(s), zlib.crc32(s))
                   for mode, s in zip(channel_modes, streams))
    for ctype, data in chunks:
        out.append(_CHUNK.pack(ctype, len(data), zlib.crc32(data)))
    out.append(_CRC.pack(zlib.crc32(b"".join(out))))
    out.extend(data for _, data in chunks)
    out.extend(streams)
    return b"".join(out)


def _read(fp: BinaryIO, n: int) -> bytes:
    """Read up to n bytes in bounded blocks, so a huge n never pre-allocates."""
    parts = []
    while n > 0:
        b = fp.read(min(n, _READ_BLOCK))
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def _available(fp: BinaryIO) -> int | None:
    try:
        pos = fp.tell()
        end = fp.seek(0, 2)
        fp.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError):
        return None


def _read_fixed(fp: BinaryIO) -> bytes:
    """The magic and fixed header, checked up to the version (reading rules 1-3)."""
    fixed = _read(fp, _FIXED.size)
    if fixed[:8] != MAGIC:
        if 0 < len(fixed) < 8 and MAGIC.startswith(fixed):
            raise TruncatedError(f"truncated l3ic header: file is {len(fixed)} bytes")
        raise NotL3icError("not an l3ic file (bad magic)")
    if len(fixed) > 8 and fixed[8] not in VERSIONS:
        raise ContainerError(f"unsupported l3ic version {fixed[8]} (this reader: "
                             f"{', '.join(map(str, VERSIONS))})")
    if len(fixed) < _FIXED.size:
        raise TruncatedError(f"truncated l3ic header: file is {len(fixed)} bytes")
    return fixed


def _read_tables(fp: BinaryIO, fixed: bytes, version: int, n_channels: int, n_chunks: int):
    """Extension, channel table, chunk directory and header CRC (checked): (extension bytes,
    [(mode, length, crc32)] per channel, group CRCs (version 3) or None, directory bytes,
    header length)."""
    ext_len = _HP.size if version == 3 else 0
    dir_len = n_chunks * _CHUNK.size
    if version == 3:
        rest = _read(fp, ext_len + streamtable.max_size(n_channels) + dir_len + _CRC.size)
        try:
            lengths, crcs, used = streamtable.parse(rest[ext_len:], n_channels)
        except streamtable.TableTruncated as e:
            raise TruncatedError(f"truncated l3ic header: {e}") from None
        except streamtable.TableError as e:
            raise ContainerError(f"invalid l3ic stream table: {e}") from None
        specs = [(STREAM_CLASS, n, crcs[i // streamtable.GROUP]) for i, n in enumerate(lengths)]
        table_len = used
    else:
        table_len = n_channels * _CHANNEL.size
        rest = _read(fp, table_len + dir_len + _CRC.size)
        specs, crcs = None, None
    end = ext_len + table_len + dir_len
    if len(rest) < end + _CRC.size:
        raise TruncatedError("truncated l3ic header (channel table / chunk directory)")
    (stored_crc,) = _CRC.unpack_from(rest, end)
    if zlib.crc32(rest[:end], zlib.crc32(fixed)) != stored_crc:
        raise ChecksumError("l3ic header CRC mismatch: header is corrupt")
    if specs is None:
        specs = [_CHANNEL.unpack_from(rest, i * _CHANNEL.size) for i in range(n_channels)]
    return (rest[:ext_len], specs, crcs, rest[ext_len + table_len:end],
            _FIXED.size + end + _CRC.size)


def _header(fixed: bytes, ext: bytes) -> Header:
    """The validated Header of a fixed header and its extension (reading rule 5)."""
    (_, version, mode_id, model_id, _, width, height, latent_h, latent_w, n_channels,
     fingerprint) = _FIXED.unpack(fixed)
    if mode_id not in _MODE_NAMES:
        raise ContainerError(f"unknown pixel mode byte {mode_id}")
    hp = {}
    if version == 3:
        level, z_channels, stride, reserved = _HP.unpack(ext)
        if reserved:
            raise ContainerError(f"reserved header byte is {reserved}, must be 0")
        hp = dict(level=level, z_channels=z_channels,
                  y_channels=n_channels - z_channels, stride=stride)
    try:
        header = Header(width, height, _MODE_NAMES[mode_id], model_id, fingerprint, **hp)
    except ValueError as e:
        raise ContainerError(f"invalid l3ic header: {e}") from None
    if header.version != (3 if version == 3 else 1):
        raise ContainerError(f"model {model_id} cannot be stored in a version {version} file")
    if n_channels != header.channels:
        raise ContainerError(f"model {model_id} has {header.channels} channels, "
                             f"header says {n_channels}")
    if (latent_h, latent_w) != (header.latent_h, header.latent_w):
        raise ContainerError(f"latent shape {latent_h}x{latent_w} does not match image "
                             f"{width}x{height} (expected {header.latent_h}x{header.latent_w})")
    return header


def _chunk_entries(directory: bytes, n_chunks: int, offset: int) -> list[ChunkEntry]:
    """The chunk directory's entries, checked (reading rule 6, first part)."""
    chunks: list[ChunkEntry] = []
    for i in range(n_chunks):
        ctype, length, crc = _CHUNK.unpack_from(directory, i * _CHUNK.size)
        if not _valid_type(ctype):
            raise ContainerError(f"invalid chunk type {ctype!r}")
        if any(c.type == ctype for c in chunks):
            raise ContainerError(f"duplicate chunk {ctype.decode()}")
        entry = ChunkEntry(ctype, offset, length, crc)
        if entry.critical and ctype not in _KNOWN_CRITICAL:
            raise ContainerError(f"unknown critical chunk {ctype.decode()}")
        if ctype in _METADATA_CHUNKS and length > MAX_METADATA:
            raise ContainerError(f"chunk {ctype.decode()} length {length} exceeds {MAX_METADATA}")
        chunks.append(entry)
        offset += length
    return chunks


def read_layout(fp: BinaryIO) -> Layout:
    """Parse and verify everything up to the payload; see the module docstring."""
    base = fp.tell()
    file_size = _available(fp)
    fixed = _read_fixed(fp)
    version, n_chunks, n_channels = fixed[8], fixed[11], _FIXED.unpack(fixed)[9]
    limit = MAX_CHANNELS_V3 if version == 3 else MAX_CHANNELS
    if not 1 <= n_channels <= limit:
        raise ContainerError(f"channel count {n_channels} outside 1..{limit}")
    if n_chunks > MAX_CHUNKS:
        raise ContainerError(f"chunk count {n_chunks} exceeds {MAX_CHUNKS}")
    ext, specs, group_crcs, directory, header_length = _read_tables(fp, fixed, version,
                                                                    n_channels, n_chunks)
    header = _header(fixed, ext)
    chunks = _chunk_entries(directory, n_chunks, header_length)
    if header.has_alpha != any(c.type == CHUNK_ALPHA for c in chunks):
        raise ContainerError(f"mode {header.mode} "
                             f"{'requires' if header.has_alpha else 'forbids'} an ALPH chunk")
    offset = header_length + sum(c.length for c in chunks)
    channels: list[ChannelEntry] = []
    for i, (mode, length, crc) in enumerate(specs):
        if mode not in _STREAM_MODES[version]:
            raise ContainerError(f"channel {i}: invalid stream mode {mode} in a version "
                                 f"{version} file")
        channels.append(ChannelEntry(mode, offset, length, crc))
        offset += length
    groups = ()
    if group_crcs is not None:
        G = streamtable.GROUP
        groups = tuple(ChannelEntry(STREAM_CLASS, channels[g * G].offset,
                                    sum(c.length for c in channels[g * G:(g + 1) * G]), crc)
                       for g, crc in enumerate(group_crcs))
    meta = {c.type: _read_entry(fp, base, file_size, c, f"chunk {c.type.decode()}")
            for c in chunks if c.type in _METADATA_CHUNKS}
    return Layout(header, tuple(channels), tuple(chunks), meta.get(CHUNK_ICC),
                  meta.get(CHUNK_EXIF), meta.get(CHUNK_XMP), base, header_length, offset,
                  file_size, groups)


def _read_entry(fp: BinaryIO, base: int, file_size: int | None,
                entry: ChannelEntry | ChunkEntry, what: str) -> bytes:
    if file_size is not None and entry.offset + entry.length > file_size:
        raise TruncatedError(f"{what} is truncated: needs bytes {entry.offset}.."
                             f"{entry.offset + entry.length}, file has {file_size}")
    fp.seek(base + entry.offset)
    data = _read(fp, entry.length)
    if len(data) != entry.length:
        raise TruncatedError(f"{what} is truncated: {len(data)} of {entry.length} bytes")
    if zlib.crc32(data) != entry.crc32:
        raise ChecksumError(f"{what} CRC mismatch: data is corrupt")
    return data


def _read_group(fp: BinaryIO, layout: Layout, g: int) -> list[bytes]:
    """Version 3: the streams of CRC group g, read together and checked against its CRC."""
    data = _read_entry(fp, layout.base, layout.file_size, layout.groups[g], f"channel group {g}")
    first = g * streamtable.GROUP
    chans = layout.channels[first:first + streamtable.GROUP]
    start = chans[0].offset
    return [data[c.offset - start:c.offset - start + c.length] for c in chans]


def read_channel(fp: BinaryIO, layout: Layout, index: int) -> bytes:
    """Read one channel stream and verify its CRC (TruncatedError / ChecksumError); in a
    version 3 file the CRC covers the channel's group, which is read whole."""
    if not 0 <= index < len(layout.channels):
        raise IndexError(f"channel {index} out of range")
    if layout.groups:
        return _read_group(fp, layout, index // streamtable.GROUP)[index % streamtable.GROUP]
    return _read_entry(fp, layout.base, layout.file_size, layout.channels[index],
                       f"channel {index}")


def read_channels(fp: BinaryIO, layout: Layout, *,
                  allow_truncated: bool = False) -> list[bytes | None]:
    """Every channel stream; with allow_truncated, a missing or corrupt one (version 3: every
    channel of its CRC group) is None instead of raising."""
    G = streamtable.GROUP
    if layout.groups:       # units read and checked together: (reader, channel count)
        units = [(lambda g=g: _read_group(fp, layout, g), len(layout.channels[g * G:(g + 1) * G]))
                 for g in range(len(layout.groups))]
    else:
        units = [(lambda i=i: [read_channel(fp, layout, i)], 1)
                 for i in range(len(layout.channels))]
    out: list[bytes | None] = []
    for read, count in units:
        try:
            out.extend(read())
        except ContainerError:
            if not allow_truncated:
                raise
            out.extend([None] * count)
    return out


def read_alpha(fp: BinaryIO, layout: Layout, *, allow_truncated: bool = False) -> bytes | None:
    entry = layout.alpha
    if entry is None:
        return None
    try:
        return _read_entry(fp, layout.base, layout.file_size, entry, "alpha chunk")
    except ContainerError:
        if not allow_truncated:
            raise
        return None


def unpack(data: bytes, *, allow_truncated: bool = False
           ) -> tuple[Layout, list[bytes | None], bytes | None]:
    """Parse a whole in-memory container: (layout, channel streams, alpha bytes or None)."""
    fp = BytesIO(data)
    layout = read_layout(fp)
    return (layout, read_channels(fp, layout, allow_truncated=allow_truncated),
            read_alpha(fp, layout, allow_truncated=allow_truncated))

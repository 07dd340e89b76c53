"""Version 3 containers (hp models): header extension, class-coded channel modes, checks."""
import io
import struct
import zlib

import pytest

from PIL_l3ic import container as c
from PIL_l3ic.container import ContainerError, Header

FP = bytes(range(8))


def hp_header(width=100, height=70, mode="RGB", level=3 * c.LEVEL_ONE, z=3, y=5, stride=16):
    return Header(width, height, mode, c.HP_MODEL_ID, FP, level=level, z_channels=z,
                  y_channels=y, stride=stride)


def forge_v3(*, level=100, z=3, y=5, stride=16, reserved=0, width=100, height=70, latent=None,
             model_id=c.HP_MODEL_ID, version=3, table=None, body=b""):
    """A version 3 header built by hand, with a valid CRC; empty streams unless ``table``
    (the raw stream table bytes) and ``body`` say otherwise."""
    n = z + y
    latent = latent or (4 * -(-height // (4 * stride)), 4 * -(-width // (4 * stride)))
    if table is None:
        table = bytes(n) + struct.pack("<I", 0) * (-(-n // 16))
    raw = (c.MAGIC + struct.pack("<BBBB", version, 1, model_id, 0)
           + struct.pack("<IIHHH", width, height, latent[0], latent[1], n) + FP
           + struct.pack("<HHBB", level, z, stride, reserved) + table)
    return raw + struct.pack("<I", zlib.crc32(raw)) + body


def test_round_trip_of_the_header_and_streams():
    h = hp_header()
    streams = [bytes([i]) * (i + 1) for i in range(h.channels)]
    data = c.pack(h, streams, [c.STREAM_CLASS] * h.channels, icc=b"icc")
    assert data[8] == 3
    layout, got, alpha = c.unpack(data)
    assert layout.header == h and got == streams and alpha is None and layout.icc == b"icc"
    assert (h.latent_h, h.latent_w) == (8, 8)       # 4 * ceil(70 / 64), 4 * ceil(100 / 64)
    # fixed + extension + 8 one-byte varints + one group CRC + one chunk entry + header CRC
    assert layout.header_length == 34 + 6 + 8 + 4 + 12 + 4
    assert layout.channels[3].offset == layout.header_length + 3 + 1 + 2 + 3


def test_hand_built_header_reads_back():
    layout = c.read_layout(io.BytesIO(forge_v3()))
    h = layout.header
    assert (h.level, h.z_channels, h.y_channels, h.stride) == (100, 3, 5, 16)


@pytest.mark.parametrize("kwargs, message", [
    (dict(reserved=1), "reserved header byte"),
    (dict(stride=4), "stride 4"),
    (dict(z=0), "0 z and 5 y channels"),
    (dict(z=8, y=0), "channel count 8 outside|8 z and 0 y"),
    (dict(latent=(5, 8)), "latent shape"),
    (dict(table=b"\x80\x00" + bytes(7) + bytes(4)), "not canonical"),
    (dict(table=b"\xff" * 5 + b"\x01" + bytes(7) + bytes(4)), "longer than 5 bytes"),
    (dict(table=b"\xff\xff\xff\xff\x7f" + bytes(7) + bytes(4)), "exceeds 2"),
    (dict(model_id=2), "cannot be stored in a version 3 file|takes no hp fields"),
])
def test_invalid_version_3_headers(kwargs, message):
    with pytest.raises(ContainerError, match=message):
        c.read_layout(io.BytesIO(forge_v3(**kwargs)))


def test_hp_model_in_a_version_1_file_is_refused():
    data = bytearray(c.pack(Header(8, 8, "RGB", 1, FP), [b""] * 16, [0] * 16))
    data[10] = c.HP_MODEL_ID
    data[-4 - 0:] = data[-4:]   # keep length
    body = bytes(data[:34 + 9 * 16])
    fixed = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(ContainerError, match="hp model needs"):
        c.read_layout(io.BytesIO(fixed))


def test_truncated_extension_and_table():
    data = forge_v3()
    for cut in (35, 39, 40, 45, 50, len(data) - 1):
        with pytest.raises(c.TruncatedError):
            c.read_layout(io.BytesIO(data[:cut]))


def test_header_validation():
    with pytest.raises(ValueError, match="needs level"):
        Header(8, 8, "RGB", c.HP_MODEL_ID, FP, level=1)
    with pytest.raises(ValueError, match="takes no hp fields"):
        Header(8, 8, "RGB", 1, FP, level=1)
    with pytest.raises(ValueError, match="level 70000"):
        hp_header(level=70000)
    with pytest.raises(ValueError, match="together at most"):
        hp_header(z=600, y=600)
    with pytest.raises(ValueError, match="invalid stream mode 0 for a version 3"):
        c.pack(hp_header(), [b""] * 8, [0] * 8)
    with pytest.raises(ValueError, match="invalid stream mode 4 for a version 1"):
        c.pack(Header(8, 8, "RGB", 1, FP), [b""] * 16, [4] * 16)


def test_group_crcs_cover_16_streams_each():
    n = 37                                    # 3 groups: 16, 16, 5
    h = hp_header(z=5, y=32)
    streams = [bytes([i % 7]) * (i % 5) for i in range(n)]
    data = c.pack(h, streams, [c.STREAM_CLASS] * n)
    layout = c.read_layout(io.BytesIO(data))
    assert len(layout.groups) == 3 and [g.length for g in layout.groups] == [
        sum(len(s) for s in streams[k:k + 16]) for k in (0, 16, 32)]
    fp = io.BytesIO(data)
    assert [c.read_channel(fp, layout, i) for i in range(n)] == streams
    bad = bytearray(data)
    bad[layout.channels[20].offset] ^= 1      # a byte of group 1
    fp = io.BytesIO(bytes(bad))
    with pytest.raises(c.ChecksumError, match="channel group 1"):
        c.read_channel(fp, layout, 17)
    assert c.read_channel(fp, layout, 3) == streams[3]      # other groups still read
    got = c.read_channels(fp, layout, allow_truncated=True)
    assert got[16:32] == [None] * 16 and got[:16] == streams[:16] and got[32:] == streams[32:]


def test_stream_table_varints():
    from PIL_l3ic import streamtable
    lengths = [0, 1, 127, 128, 16383, 16384, 2 ** 32 - 1]
    table = b"".join(streamtable._varint(n) for n in lengths) + bytes(4)
    got, crcs, used = streamtable.parse(table, len(lengths))
    assert got == lengths and used == len(table) and crcs == [0]
    assert len(streamtable._varint(2 ** 32 - 1)) == streamtable.MAX_VARINT

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
             model_id=c.HP_MODEL_ID, version=3, modes=None):
    """A version 3 header built by hand, with a valid CRC, and empty streams."""
    n = z + y
    latent = latent or (4 * -(-height // (4 * stride)), 4 * -(-width // (4 * stride)))
    modes = modes or [c.STREAM_CLASS] * n
    raw = (c.MAGIC + struct.pack("<BBBB", version, 1, model_id, 0)
           + struct.pack("<IIHHH", width, height, latent[0], latent[1], n) + FP
           + struct.pack("<HHBB", level, z, stride, reserved)
           + b"".join(struct.pack("<BII", m, 0, 0) for m in modes))
    return raw + struct.pack("<I", zlib.crc32(raw))


def test_round_trip_of_the_header_and_streams():
    h = hp_header()
    streams = [bytes([i]) * (i + 1) for i in range(h.channels)]
    data = c.pack(h, streams, [c.STREAM_CLASS] * h.channels, icc=b"icc")
    assert data[8] == 3
    layout, got, alpha = c.unpack(data)
    assert layout.header == h and got == streams and alpha is None and layout.icc == b"icc"
    assert (h.latent_h, h.latent_w) == (8, 8)       # 4 * ceil(70 / 64), 4 * ceil(100 / 64)
    assert layout.header_length == 34 + 6 + 9 * 8 + 12 + 4


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
    (dict(modes=[c.STREAM_TANS] * 8), "invalid stream mode 0 in a version 3 file"),
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


def test_truncated_extension():
    data = forge_v3()
    for cut in (35, 39, 40, 60):
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

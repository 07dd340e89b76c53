"""Security properties of version 3 files (the hp models; docs/security.md, "Version 3 (hp)"):
corrupt, truncated and mismatched streams and headers each raise a specific OSError subclass,
sizes are refused before allocation where the format allows it, every bit flip is detected,
and the fuzzing helpers (CRC fix-up, network stand-in) handle version 3.  Skipped when the hp
model is not installed."""
from __future__ import annotations

import dataclasses
import io
import json
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from PIL_l3ic import container, hp_codec, runtime
from PIL_l3ic.container import ChecksumError, ContainerError, TruncatedError
from _samples import decode, image, save

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
import _common  # noqa: E402
import checks  # noqa: E402


@pytest.fixture(scope="module")
def model():
    try:
        return hp_codec.load_model()
    except OSError as e:
        pytest.skip(f"hp model not installed: {e}")


@pytest.fixture(scope="module")
def hp_file(model):
    """A 70x40 RGB file: z is 1x2 per channel, the latent 4x8."""
    return save(image("RGB", 70, 40, seed=3), model="hp", quality=60)


def repack(data, streams=None, **fields):
    """The file with some streams and/or header fields replaced, every CRC valid."""
    layout, old, alpha = container.unpack(data)
    header = dataclasses.replace(layout.header, **fields)
    streams = old if streams is None else streams
    return container.pack(header, streams, [container.STREAM_CLASS] * len(streams),
                          icc=layout.icc, exif=layout.exif, xmp=layout.xmp, alpha=alpha)


def with_stream(data, index, new):
    streams = container.unpack(data)[1]
    streams[index] = new
    return repack(data, streams)


def busy(data, first, last):
    """Index of the first non-empty stream in first..last-1."""
    streams = container.unpack(data)[1]
    return next(i for i in range(first, last) if streams[i])


def open_load(data):
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


# ----------------------------------------------------------------------------- streams

@pytest.mark.parametrize("part", ["z", "y"])
def test_corrupt_stream(model, hp_file, part):
    lo, hi = (0, model.z_channels) if part == "z" else (model.z_channels, container.unpack(
        hp_file)[0].header.channels)
    i = busy(hp_file, lo, hi)
    s = bytearray(container.unpack(hp_file)[1][i])
    s[-1] = 0                      # no end marker: refused for any content
    with pytest.raises(ContainerError, match="corrupt l3ic channel stream"):
        open_load(with_stream(hp_file, i, bytes(s)))
    bad = bytearray(hp_file)       # the same byte changed in place: the group CRC catches it
    bad[container.read_layout(io.BytesIO(hp_file)).channels[i].offset] ^= 0x10
    with pytest.raises(ChecksumError, match=f"channel group {i // 16} CRC mismatch"):
        open_load(bytes(bad))


def test_truncated_z_stream(model, hp_file):
    i = busy(hp_file, 0, model.z_channels)
    s = container.unpack(hp_file)[1][i]
    with pytest.raises(ContainerError, match="corrupt l3ic channel stream"):
        open_load(with_stream(hp_file, i, s[:1]))      # < 13 bits: not even the final state


def test_file_cut_inside_the_z_streams(model, hp_file):
    layout = container.read_layout(io.BytesIO(hp_file))
    g = next(k for k in range(1, model.z_channels // 16) if layout.groups[k].length)
    cut = layout.groups[g].offset + 1          # z groups before g intact, the rest missing
    with pytest.raises(TruncatedError, match=f"channel group {g} is truncated"):
        open_load(hp_file[:cut])
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        assert open_load(hp_file[:cut]) == (70, 40)     # salvaged: missing channels are zeros
        if layout.groups[0].length:
            with pytest.raises(ContainerError, match="no channel stream .* is intact"):
                open_load(hp_file[:layout.groups[0].offset + 1])
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_extreme_z_values_give_classes_within_the_tables(model, hp_file):
    """Scale classes are computed from z, never read from the file: z values at the coder's
    limit (+-2^20) still give classes the tables have, and the file decodes."""
    from PIL_l3ic import _fse
    zh, zw = model.geometry(40, 70)[2:]
    for sign in (1, -1):
        z = np.full((model.z_channels, zh * zw), sign * _fse.MAX_CLASS_VALUE, np.int32)
        mean, classes = hp_codec.hyper(model, z.reshape(-1, zh, zw))
        assert classes.max() < model.y_tables.classes
        zs = _fse.compress_classes_batch(z, hp_codec.z_classes(model, zh, zw), model.z_tables)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # pixels from absurd latents
            assert open_load(repack(hp_file, zs + [b""] * model.channels)) == (70, 40)


# ----------------------------------------------------------------------------- header

def test_wrong_fingerprint(hp_file):
    with pytest.raises(runtime.ModelError, match="fingerprint"):
        open_load(repack(hp_file, fingerprint=bytes(8)))


def test_level_above_the_model_range(model, hp_file):
    top = (model.levels - 1) * container.LEVEL_ONE
    assert open_load(repack(hp_file, level=top)) == (70, 40)
    with pytest.raises(ContainerError, match="level .* outside the model's"):
        open_load(repack(hp_file, level=top + 1))


@pytest.mark.parametrize("change", ["z_channels", "y_channels", "stride"])
def test_geometry_that_does_not_match_the_model(model, hp_file, change):
    nz, m = model.z_channels, model.channels
    fields = {"z_channels": dict(z_channels=nz - 1, y_channels=m + 1),
              "y_channels": dict(y_channels=m - 1),
              "stride": dict(stride=24 - model.stride)}[change]       # 16 <-> 8
    n = nz + m - (change == "y_channels")
    data = repack(hp_file, container.unpack(hp_file)[1][:n], **fields)
    with pytest.raises(ContainerError, match="does not match its model's geometry"):
        open_load(data)


def test_stream_modes(hp_file):
    """Version 3 has no per-channel mode byte (every stream is class-coded): the writer refuses
    other modes, a class-coded mode in a version 1 table is refused, and a version 3 header
    with a 0.1.0 model id is refused."""
    layout, streams, _ = container.unpack(hp_file)
    with pytest.raises(ValueError, match="invalid stream mode 0 for a version 3 file"):
        container.pack(layout.header, streams, [0] * len(streams))
    v1 = bytearray(save(image("RGB", 16, 16), quality="16c"))
    v1[34] = container.STREAM_CLASS                    # channel 0's mode byte
    with pytest.raises(ContainerError, match="invalid stream mode 4 in a version 1 file"):
        open_load(_common.fix_crcs(bytes(v1)))
    v3 = bytearray(hp_file)
    v3[10] = 1
    with pytest.raises(ContainerError, match="takes no hp fields"):
        open_load(_common.fix_crcs(bytes(v3), refingerprint=False))


def test_table_set_that_does_not_match_the_model(model, tmp_path, monkeypatch):
    """A model whose class tables do not cover its classes is refused when it loads."""
    info = dict(model.info)
    for key in ("encoder", "hyper_encoder", "decoder"):
        info[key] = str(model.json_path.parent / info[key])    # absolute: the same networks
    with np.load(model.json_path.parent / info["hyper"]) as f:
        arrays = {k: f[k] for k in f.files}
    for what, rows in (("z", model.z_channels // 2), ("y", model.hyper.classes - 1)):
        bad = dict(arrays, **{f"{what}_counts": arrays[f"{what}_counts"][:rows]})
        np.savez(tmp_path / f"bad_{what}.npz", **bad)
        (tmp_path / f"l3ic_hp_{what}.json").write_text(json.dumps(dict(info, hyper=f"bad_{what}.npz")))
        monkeypatch.setenv(runtime.ENV_MODEL_DIR, str(tmp_path))
        with pytest.raises(runtime.ModelError, match="tables, the model needs"):
            hp_codec.load_model(f"l3ic_hp_{what}")


# ----------------------------------------------------------------------------- sizes

def _empty_file(model, width, height):
    """A valid file of nothing but empty streams (all-zero channels): 444 bytes at any size."""
    header = container.Header(width, height, "RGB", container.HP_MODEL_ID, model.fingerprint,
                              level=0, z_channels=model.z_channels, y_channels=model.channels,
                              stride=model.stride)
    n = header.channels
    return container.pack(header, [b""] * n, [container.STREAM_CLASS] * n)


def test_huge_dimensions_refused_at_open(model):
    data = _empty_file(model, 65535, 65535)
    tracemalloc.start()
    try:
        with pytest.raises(Image.DecompressionBombError):
            Image.open(io.BytesIO(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_empty_streams_decode_at_the_declared_size(model):
    """Decode work follows the header, not the file size (docs/security.md)."""
    data = _empty_file(model, 300, 200)
    assert len(data) < 512 and open_load(data) == (300, 200)


def test_bogus_streams_within_the_pixel_limit(model, monkeypatch):
    """8000 x 8000 with 1-byte streams: refused at the first z stream; what is allocated before
    is the z decode buffers (values int32, classes uint8), sized by the (validated) header:
    at most ~10 bytes per z element (20 MB for a stride-16 model, 40 MB for stride 8)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1 << 26)
    data = repack(_empty_file(model, 8000, 8000), [b"\x07"] * (model.z_channels + model.channels))
    tracemalloc.start()
    try:
        with pytest.raises(ContainerError, match="corrupt l3ic channel stream"):
            open_load(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _, _, zh, zw = model.geometry(8000, 8000)
    z_elements = model.z_channels * zh * zw
    assert peak < 10 * z_elements + (8 << 20), f"{peak} bytes allocated for a {len(data)}-byte file"


# ----------------------------------------------------------------------------- bit flips

def test_bitflip_every_bit_detected(model):
    """Header, extension, stream table (varints, group CRCs), chunks, streams: all under a
    CRC, so every single-bit flip of a file as the writer makes it raises."""
    data = save(image("LA", 3, 2), model="hp", quality=0, icc_profile=b"icc")
    reference = decode(data)
    for pos in range(len(data)):
        for bit in range(8):
            b = bytearray(data)
            b[pos] ^= 1 << bit
            try:
                got = decode(bytes(b))
            except (OSError, Image.DecompressionBombError):
                continue
            assert got == reference, f"flip {pos}.{bit} decoded differently"
            pytest.fail(f"flip {pos}.{bit} of a {len(data)}-byte file was not detected")


# ----------------------------------------------------------------------------- fuzz helpers

def test_fix_crcs_handles_version_3(model, hp_file):
    assert _common.fix_crcs(hp_file) == hp_file
    layout = container.read_layout(io.BytesIO(hp_file))
    b = bytearray(hp_file)
    b[26:34] = bytes(8)                                  # fingerprint
    b[layout.channels[busy(hp_file, 0, layout.header.channels)].offset] ^= 1  # a stream
    b[layout.header_length - 1] ^= 1                     # the header CRC
    fixed = _common.fix_crcs(bytes(b))
    assert fixed[26:34] == model.fingerprint
    container.unpack(fixed)                              # every CRC valid again
    for cut in range(0, len(hp_file), 7):                # never raises on a prefix
        _common.fix_crcs(hp_file[:cut])


def test_network_standin_matches_the_hp_networks(model, monkeypatch):
    monkeypatch.setattr(runtime, "network", runtime.network)
    monkeypatch.setattr(runtime.FileNetwork, "run", runtime.FileNetwork.run)
    standin = checks.install_network_standin()
    shapes = {}
    try:
        for net, shape in ((model.decoder, (1, 7, 5, model.channels)),
                           (model.encoder, (1, 64, 128, 3)),
                           (model.hyper_encoder, (1, 7, 5, model.channels))):
            for real in (True, False):
                standin.real = real
                shapes[net.path.name, real] = net.run(shape, lambda b: b.fill(0.5),
                                                      lambda out: out.shape)
    finally:
        standin.real = True
    for (name, real), shape in shapes.items():
        assert shape == shapes[name, True], name

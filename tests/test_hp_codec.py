"""The hp model family end to end: Pillow save/open with model="hp", version 3 files."""
import io
import os

import numpy as np
import pytest
from PIL import Image

import PIL_l3ic  # noqa: F401
from PIL_l3ic import container, hp_codec, options, runtime
from PIL_l3ic.container import ContainerError

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "samples", "astronaut.png")


@pytest.fixture(scope="module")
def model():
    return hp_codec.load_model()


@pytest.fixture(scope="module")
def photo():
    """A 200x136 crop of the sample photograph."""
    with Image.open(SAMPLE) as im:
        return im.convert("RGB").crop((100, 40, 300, 176))


def save(im, **opts):
    buf = io.BytesIO()
    im.save(buf, "L3IC", model="hp", **opts)
    return buf.getvalue()


def psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / mse)


def test_round_trip_through_pillow(photo):
    data = save(photo, quality=70)
    assert data[8] == 3 and data[10] == container.HP_MODEL_ID
    with Image.open(io.BytesIO(data)) as im:
        assert im.l3ic_model == "hp" and im.size == photo.size and im.mode == "RGB"
        back = im.convert("RGB")
    assert psnr(back, photo) > 24.0


def test_encoding_is_deterministic(photo):
    assert save(photo, quality=50) == save(photo, quality=50)


def test_rate_grows_with_quality(photo):
    sizes = [len(save(photo, quality=q)) for q in (0, 20, 40, 60, 80, 100)]
    assert sizes == sorted(sizes) and sizes[-1] > 2 * sizes[0]


def test_float_quality_and_presets(model, photo):
    assert hp_codec.resolve_level(37.5, model) == pytest.approx(0.375 * (model.levels - 1))
    assert hp_codec.resolve_level("Medium", model) == hp_codec.resolve_level("32c", model)
    for bad in (-1, 100.5, "99c", True, None):
        with pytest.raises(ValueError, match="invalid l3ic quality"):
            save(photo, quality=bad)


def test_unknown_family_and_refine_are_refused(photo):
    with pytest.raises(ValueError, match="unknown l3ic model family"):
        photo.save(io.BytesIO(), "L3IC", model="jpeg")
    with pytest.raises(ValueError, match="refine is not available"):
        save(photo, refine=3)


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA"])
def test_other_modes(photo, mode):
    im = photo.convert(mode)
    with Image.open(io.BytesIO(save(im, quality=80))) as back:
        assert back.mode == mode
        back.load()
        if "A" in mode:
            assert back.getchannel("A").tobytes() == im.getchannel("A").tobytes()
        assert psnr(back.convert("L"), im.convert("L")) > 24.0


def test_odd_sizes(photo):
    for size in ((1, 1), (17, 9), (65, 130)):
        im = photo.resize(size)
        with Image.open(io.BytesIO(save(im, quality=60))) as back:
            assert back.size == size
            back.load()


def test_streams_decode_independently_of_thread_count(photo, model):
    fields, streams, _ = hp_codec.encode(np.asarray(photo), 3.0, threads=1, model=model)
    _, streams2, _ = hp_codec.encode(np.asarray(photo), 3.0, threads=2, model=model)
    assert streams == streams2
    header = container.Header(mode="RGB", **fields)
    a = hp_codec.decode(header, streams, threads=1, model=model)
    b = hp_codec.decode(header, streams, threads=2, model=model)
    assert np.array_equal(a, b)


def corrupt(data, index, flip):
    """Flip bytes of channel stream ``index`` and fix its CRC, so only the coder sees it."""
    layout, streams, alpha = container.unpack(data)
    s = bytearray(streams[index])
    for i in flip:
        s[i % len(s)] ^= 0x5A
    streams[index] = bytes(s)
    return container.pack(layout.header, streams, [c.mode for c in layout.channels])


def test_corrupt_streams_raise_oserror(photo, model):
    data = save(photo, quality=60)
    for index in (0, model.z_channels, model.z_channels + 5):
        bad = corrupt(data, index, (0, 3, 7))
        with pytest.raises(OSError):
            Image.open(io.BytesIO(bad)).load()


def test_header_that_does_not_fit_the_model(photo, model):
    data = save(photo, quality=60)
    layout, streams, _ = container.unpack(data)
    h = layout.header
    too_high = container.Header(h.width, h.height, h.mode, h.model_id, h.fingerprint,
                                level=model.levels * container.LEVEL_ONE,
                                z_channels=h.z_channels, y_channels=h.y_channels, stride=h.stride)
    bad = container.pack(too_high, streams, [c.mode for c in layout.channels])
    with pytest.raises(ContainerError, match="level"):
        Image.open(io.BytesIO(bad)).load()
    other = container.Header(h.width, h.height, h.mode, h.model_id, bytes(8), level=h.level,
                             z_channels=h.z_channels, y_channels=h.y_channels, stride=h.stride)
    bad = container.pack(other, streams, [c.mode for c in layout.channels])
    with pytest.raises(runtime.ModelError, match="fingerprint"):
        Image.open(io.BytesIO(bad)).load()


def test_truncated_file_raises_unless_allowed(photo):
    data = save(photo, quality=60)
    with pytest.raises(OSError):
        Image.open(io.BytesIO(data[:-20])).load()


def test_options_module_is_the_one_home():
    assert options.preset(" HIGH ") == "64c" and options.preset("70") is None
    assert options.number(70) == 70.0 and options.number(True) is None


def test_tiled_networks_match_whole_image(photo, model):
    """Windows with the model's margin give (nearly: dynamic int8 quantises per window) the
    whole-image result, in the encoder and the decoder."""
    rgb = np.asarray(photo.resize((300, 200)))
    r, classes, z = hp_codec.analyse(model, rgb, 4.0)
    r_tiled, _, _ = hp_codec.analyse(model, rgb, 4.0, tile=4 * model.stride)
    assert np.mean(r == r_tiled) > 0.97
    mean, _ = hp_codec.hyper(model, z)
    whole = hp_codec.synthesise(model, mean, r, 4.0, 200, 300)
    tiled = hp_codec.synthesise(model, mean, r, 4.0, 200, 300, tile=4 * model.stride)
    assert psnr(whole, tiled) > 40.0
    assert psnr(whole, rgb) > 24.0


def test_truncated_file_salvage(photo):
    """LOAD_TRUNCATED_IMAGES: the channels that were cut off decode as zeros, i.e. as their
    predicted means; the picture stays close to the full decode."""
    from PIL import ImageFile
    data = save(photo, quality=60)
    layout, streams, _ = container.unpack(data)
    keep = layout.channels[-8].offset      # the last 8 y channels are cut off
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with Image.open(io.BytesIO(data[:keep])) as im:
            part = np.asarray(im.convert("RGB"))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    assert part.shape == full.shape and psnr(part, full) > 25.0

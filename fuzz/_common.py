"""Shared helpers for the fuzz harnesses, the corpus generator and tests/test_security.py.

Sanitized extension
    ``L3IC_FUZZ_EXT=<dir>`` (set by fuzz/run_campaign.sh) names a directory holding
    ``PIL_l3ic/_fse*.so`` built by fuzz/build_sanitized.sh; ``use_fuzz_extension()`` loads it as
    ``PIL_l3ic._fse`` before anything imports the in-place build.  Without the variable the
    normal extension is used (CI smoke runs, tests).

CRC fix-up
    ``fix_crcs(data)`` recomputes every CRC a mutated container declares (chunk data, channel
    streams, header) and stamps the installed model's fingerprint, so the fuzzer's mutations of
    lengths, modes, streams and chunk data reach the checks behind the CRCs (entropy decoder,
    alpha inflation, field validation) instead of all stopping at the first CRC.  Version 3
    (hp) headers too: the 6-byte extension, the LEB128 stream table with one CRC per group of
    16 streams, and the hp model's fingerprint (hp_codec.load_model()).  It never raises and
    never allocates more than the input.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import struct
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Fuzz the checkout when it is built in place (or a sanitized build is named); otherwise the
# installed package (CI: ``pip install .`` builds the extension into site-packages only).
if ROOT not in sys.path and (os.environ.get("L3IC_FUZZ_EXT")
                             or glob.glob(os.path.join(ROOT, "PIL_l3ic", "_fse*.so"))
                             or importlib.util.find_spec("PIL_l3ic") is None):
    sys.path.insert(1, ROOT)

MAGIC = b"\x89L3C\r\n\x1a\n"
_FIXED = 34
_MODEL_CHANNELS = {1: 16, 2: 32, 3: 64}
HP_MODEL_ID = 4
_HP_EXT = 6        # version 3: level, z_channels, stride, reserved


def use_fuzz_extension() -> str | None:
    """Load the sanitized ``_fse`` named by L3IC_FUZZ_EXT (see the module docstring)."""
    ext_dir = os.environ.get("L3IC_FUZZ_EXT")
    if not ext_dir:
        return None
    if "PIL_l3ic._fse" in sys.modules:
        return sys.modules["PIL_l3ic._fse"].__file__
    paths = glob.glob(os.path.join(ext_dir, "PIL_l3ic", "_fse*.so"))
    if not paths:
        raise RuntimeError(f"L3IC_FUZZ_EXT={ext_dir}: no PIL_l3ic/_fse*.so there "
                           "(run fuzz/build_sanitized.sh)")
    # registered under its package name without importing the package, so that a harness can
    # still import PIL_l3ic itself inside atheris.instrument_imports()
    spec = importlib.util.spec_from_file_location("PIL_l3ic._fse", paths[0])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["PIL_l3ic._fse"] = mod
    spec.loader.exec_module(mod)
    if "PIL_l3ic" in sys.modules:
        sys.modules["PIL_l3ic"]._fse = mod
    return paths[0]


def fse_module():
    use_fuzz_extension()
    from PIL_l3ic import _fse
    return _fse


_fingerprints: dict[int, bytes] = {}


def installed_fingerprint(model_id: int) -> bytes | None:
    """The installed model's fingerprint (1-3: the 0.1.0 models, 4: hp); None without it."""
    if model_id not in _fingerprints:
        try:
            if model_id == HP_MODEL_ID:
                from PIL_l3ic import hp_codec
                _fingerprints[model_id] = hp_codec.load_model().fingerprint
            else:
                from PIL_l3ic import runtime
                _fingerprints[model_id] = runtime.model_info(model_id).fingerprint
        except (OSError, ValueError):
            return None
    return _fingerprints[model_id]


def fix_crcs(data: bytes, refingerprint: bool = True) -> bytes:
    """Recompute the CRCs (and fingerprint) of a container-shaped buffer; see module docstring."""
    if len(data) < _FIXED or data[:8] != MAGIC:
        return data
    b = bytearray(data)
    version, model_id, n_chunks = b[8], b[10], b[11]
    (n_channels,) = struct.unpack_from("<H", b, 24)
    if refingerprint and (model_id in _MODEL_CHANNELS or model_id == HP_MODEL_ID):
        fp = installed_fingerprint(model_id)
        if fp is not None:
            b[26:34] = fp
    if version == 3:
        return _fix_v3(b, n_channels, n_chunks)
    if not 1 <= n_channels <= 256 or n_chunks > 16:
        return bytes(b)
    table = _FIXED
    directory = table + 9 * n_channels
    crc_at = directory + 12 * n_chunks
    if crc_at + 4 > len(b):
        return bytes(b)
    offset = crc_at + 4
    entries = []   # (position of the crc field, data offset, length)
    for i in range(n_chunks):
        pos = directory + 12 * i
        (length,) = struct.unpack_from("<I", b, pos + 4)
        entries.append((pos + 8, offset, length))
        offset += length
    for i in range(n_channels):
        pos = table + 9 * i
        (length,) = struct.unpack_from("<I", b, pos + 1)
        entries.append((pos + 5, offset, length))
        offset += length
    for crc_pos, off, length in entries:
        if off + length <= len(b):
            struct.pack_into("<I", b, crc_pos, zlib.crc32(b[off:off + length]))
    struct.pack_into("<I", b, crc_at, zlib.crc32(b[:crc_at]))
    return bytes(b)


def _fix_v3(b: bytearray, n_channels: int, n_chunks: int) -> bytes:
    """fix_crcs for a version 3 header: extension, stream table (varint lengths, group CRCs)."""
    from PIL_l3ic import streamtable
    table = _FIXED + _HP_EXT
    if not 1 <= n_channels <= 1024 or n_chunks > 16 or table > len(b):
        return bytes(b)
    try:
        lengths, _, used = streamtable.parse(bytes(b[table:table + streamtable.max_size(
            n_channels)]), n_channels)
    except streamtable.TableError:
        return bytes(b)
    groups_at = table + used - 4 * streamtable.groups(n_channels)
    directory = table + used
    crc_at = directory + 12 * n_chunks
    if crc_at + 4 > len(b):
        return bytes(b)
    offset = crc_at + 4
    for i in range(n_chunks):
        pos = directory + 12 * i
        (length,) = struct.unpack_from("<I", b, pos + 4)
        if offset + length <= len(b):
            struct.pack_into("<I", b, pos + 8, zlib.crc32(b[offset:offset + length]))
        offset += length
    G = streamtable.GROUP
    for g in range(streamtable.groups(n_channels)):
        size = sum(lengths[g * G:(g + 1) * G])
        if offset + size <= len(b):
            struct.pack_into("<I", b, groups_at + 4 * g, zlib.crc32(b[offset:offset + size]))
        offset += size
    struct.pack_into("<I", b, crc_at, zlib.crc32(b[:crc_at]))
    return bytes(b)


def width_for(n: int) -> int:
    """The row width the stream harnesses decode context streams with: the largest divisor
    of n up to sqrt(n) (fuzz/fuzz_fse.c uses the same rule; make_corpus.py codes its
    synthetic context streams with it, so they decode)."""
    w, d = 1, 2
    while d * d <= n:
        if n % d == 0:
            w = d
        d += 1
    return w

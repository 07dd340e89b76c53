"""atheris harness over the whole decode path: Image.open + load() on arbitrary bytes.

    python fuzz/fuzz_decode.py CORPUS_DIR [libFuzzer flags]      (see fuzz/run_campaign.sh)

Each input is decoded either as it is (one input in four) or with its CRCs recomputed and the
installed model's fingerprint stamped in (fuzz/_common.fix_crcs), so that mutations behind the
CRCs reach the field validation, the chunk reader, the entropy decoder and the alpha inflater.
The choice, like the others below, is a function of the input (its CRC-32), so every input
always takes the same path.  For the chosen buffer: ``Image.open(..., formats=["L3IC"])``
(header, channel table, chunk directory, metadata chunks, bomb check) and ``load()`` (channel
streams, entropy decoder, decoder network, alpha); for one input in four a load that fails is
retried with ``ImageFile.LOAD_TRUNCATED_IMAGES`` (the salvage path); one input in four also runs
``verify()`` on a fresh open, one in eight is also fed through ``ImageFile.Parser``.

Allowed outcomes: success, or ``OSError`` (ContainerError, ModelError, UnidentifiedImageError,
Pillow's truncation errors) or ``Image.DecompressionBombError``.  Anything else raised is a
finding (the exception propagates and libFuzzer saves the input), as are an image of the wrong
size or mode, more than LIMIT_S seconds of CPU time for one input (hang), and the sanitizer /
libFuzzer limits set by run_campaign.sh (-rss_limit_mb, -malloc_limit_mb, -timeout).

Speed.  ``Image.MAX_IMAGE_PIXELS`` is lowered (FUZZ_MAX_PIXELS) so that the network only ever
runs on small images; larger headers still go through the whole parser and the bomb check.  The
TFLite invoke costs ~10 ms even then, so only one input in FUZZ_REAL_NET_EVERY (default 16)
runs the real decoder network; the others run a stand-in with the same ``run(shape, fill,
take)`` interface (fills the real input buffer, returns an output of the exact shape), so every
line of codec.py around the network still runs; for version 3 (hp) files the stand-in replaces
runtime.FileNetwork.run, so hp_codec's tiling and the integer hyper-synthesis still run.
FUZZ_REAL_NET_EVERY=1: always the real one.
"""
from __future__ import annotations

import os
import sys
import time
import zlib

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

os.environ.setdefault("L3IC_NUM_THREADS", "1")
_common.use_fuzz_extension()

from PIL import Image  # noqa: E402  (Pillow itself is not instrumented)

with atheris.instrument_imports(include=["PIL_l3ic", "checks", "_common"]):
    import checks

LIMIT_S = float(os.environ.get("FUZZ_LIMIT_S", "2.0"))     # CPU seconds per input
FUZZ_MAX_PIXELS = int(os.environ.get("FUZZ_MAX_PIXELS", str(128 * 128)))
Image.MAX_IMAGE_PIXELS = FUZZ_MAX_PIXELS       # the error threshold is twice this
REAL_NET_EVERY = max(1, int(os.environ.get("FUZZ_REAL_NET_EVERY", "16")))
# resolve the model directory once (runtime.model_dir() looks it up on every decode)
os.environ.setdefault(checks.runtime.ENV_MODEL_DIR, str(checks.runtime.model_dir()))
StandIn = checks.install_network_standin()


def TestOneInput(data: bytes) -> None:
    t0 = time.process_time()
    h = zlib.crc32(data)
    buf = data if h % 4 == 0 else _common.fix_crcs(data)
    StandIn.real = (h >> 7) % REAL_NET_EVERY == 0
    checks.decode_all(buf, verify=(h >> 2) % 4 == 0, parser=(h >> 4) % 8 == 0,
                      salvage=(h >> 11) % 4 == 0)
    spent = time.process_time() - t0
    if spent > LIMIT_S:
        raise checks.Finding(f"input took {spent:.2f} s of CPU time (limit {LIMIT_S} s)")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

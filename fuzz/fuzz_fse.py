"""atheris harness for the entropy decoder through its Python API (PIL_l3ic._fse).

    python fuzz/fuzz_fse.py CORPUS_DIR [libFuzzer flags]          (see fuzz/run_campaign.sh)

The C decoder alone is fuzzed faster by fuzz/fuzz_fse.c (libFuzzer); this harness adds the
Cython layer (buffer handling, the n checks, the batch call with OpenMP threads) and runs in CI
without clang.  Each input is one stream.  Checked:
  - ``stream_info``, ``decompress(blob, n)`` and ``decompress_batch`` raise only ``FSEError``
    (a ValueError) on a bad stream, and agree with each other;
  - ``decompress(blob, n)`` with the wrong n is refused before anything is allocated;
  - an accepted stream has the length it declares, round-trips through ``compress``, and
    decodes identically alone and in a batch (with a copy of itself, two threads);
  - read as a class-coder input (2 bytes of n, then the stream; fixed tables and classes,
    checks.class_input), ``decompress_classes`` and its batch call raise only ``FSEError``,
    agree, and an accepted stream is exactly what ``compress_classes`` writes for its values.
``decompress(blob)`` without n is called only when the declared n is small: a run stream of 5
bytes may legitimately declare 2^31 - 1 symbols (see docs/security.md: callers decoding
untrusted data pass n, as the codec does).
"""
from __future__ import annotations

import os
import sys
import time

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

os.environ.setdefault("L3IC_NUM_THREADS", "1")
_common.use_fuzz_extension()
with atheris.instrument_imports(include=["checks", "_common"]):
    import checks

LIMIT_S = float(os.environ.get("FUZZ_LIMIT_S", "2.0"))


def TestOneInput(data: bytes) -> None:
    t0 = time.process_time()
    checks.check_stream(data)
    checks.check_class_stream(data)
    spent = time.process_time() - t0
    if spent > LIMIT_S:
        raise checks.Finding(f"input took {spent:.2f} s of CPU time (limit {LIMIT_S} s)")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

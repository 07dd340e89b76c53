"""Replay inputs through the harness checks without a fuzzer (reproduce a finding, measure the
coverage a corpus reaches).

    python fuzz/replay.py decode FILE_OR_DIR...        whole decode path (fuzz/checks.decode_all)
    python fuzz/replay.py fse FILE_OR_DIR...           entropy decoder (fuzz/checks.check_stream)
    python fuzz/replay.py --coverage decode DIR...     + line/branch coverage of PIL_l3ic
                                                         (needs coverage.py)

Every entry point runs on every input (verify, parser and salvage included), with the real
networks and Image.MAX_IMAGE_PIXELS lowered as in the harness.  Each decode input is replayed
as it is and with its CRCs fixed (fuzz/_common.fix_crcs).  Prints the outcome counts; exits 1
on the first finding (with the traceback and file name).
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import traceback


def _files(paths):
    for p in paths:
        if os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                f = os.path.join(p, name)
                if os.path.isfile(f):
                    yield f
        elif os.path.isfile(p):
            yield p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coverage", action="store_true")
    ap.add_argument("target", choices=("decode", "fse"))
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args(argv)
    os.environ.setdefault("L3IC_NUM_THREADS", "1")
    cov = None
    if args.coverage:
        import coverage
        encode_only = ["cli.py", "cli_convert.py", "bench.py", "batch.py", "batch_dask.py",
                       "batch_local.py", "batch_report.py", "conversion.py", "metrics.py",
                       "__main__.py"]
        cov = coverage.Coverage(branch=True, source=["PIL_l3ic"],
                                omit=[f"*/{name}" for name in encode_only])
        cov.start()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _common
    import checks
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = int(os.environ.get("FUZZ_MAX_PIXELS", str(128 * 128)))
    counts: collections.Counter = collections.Counter()
    for path in _files(args.paths):
        with open(path, "rb") as f:
            data = f.read()
        try:
            if args.target == "decode":
                for buf in dict.fromkeys((data, _common.fix_crcs(data))):
                    counts[checks.decode_all(buf, verify=True, parser=True, salvage=True)] += 1
            else:
                counts[checks.check_stream(data)] += 1
                counts["class-" + checks.check_class_stream(data)] += 1
        except Exception:  # noqa: BLE001  (a finding: report it)
            traceback.print_exc()
            print(f"FINDING: {path}", file=sys.stderr)
            return 1
    print(dict(counts))
    if cov is not None:
        cov.stop()
        cov.report(show_missing=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Adapter for ../shared/bench/entropy_bench.py (and anything else that wants
``bytes -> bytes`` callables): the l3ic tANS coder, one channel per call.

    cd /work/main && PYTHONPATH=/work/main taskset -c 1 \
        python ../shared/bench/entropy_bench.py --coder benchmarks.entropy:compress,decompress

``compress`` returns a self-describing stream (it stores n and its mode), so
``decompress`` needs nothing but the bytes.
"""
from PIL_l3ic._fse import compress, decompress  # noqa: F401

CODER_NAME = "l3ic-fse"
__all__ = ["compress", "decompress", "CODER_NAME"]

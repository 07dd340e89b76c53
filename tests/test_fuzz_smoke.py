"""A short coverage-guided fuzz pass on every change (CI): each atheris harness in fuzz/ runs
for L3IC_FUZZ_SECONDS (default 30) from a seed corpus generated here with the installed models.

Skipped when atheris is not installed (``pip install '.[test,fuzz]'``).  This pass uses the
normal extension; the long campaigns under AddressSanitizer + UBSan are fuzz/run_campaign.sh
(docs/security.md).  A finding fails the test with the fuzzer's report; the input is left in
the test's temporary directory (copy it to fuzz/regressions/<target>/ once fixed)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("L3IC_FUZZ_SECONDS", "30"))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds")
    r = subprocess.run([sys.executable, str(ROOT / "fuzz" / "make_corpus.py"), str(out)],
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, L3IC_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.parametrize("harness, seed_dir, max_len", [
    ("fuzz_decode.py", "decode", 16384), ("fuzz_fse.py", "fse", 65536)])
def test_fuzz_pass(harness, seed_dir, max_len, seeds, tmp_path):
    corpus, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    corpus.mkdir()
    artifacts.mkdir()
    dirs = [str(corpus), str(seeds / seed_dir)]
    regressions = ROOT / "fuzz" / "regressions" / seed_dir
    if regressions.is_dir():
        dirs.append(str(regressions))
    # Slowness is judged by the harness's CPU-time limit (2 s per input); libFuzzer's -timeout
    # is wall clock and only has to catch a real hang: at 10 s, a VM stall once failed a 5-byte
    # input that runs in ~10 ms.
    cmd = [sys.executable, str(ROOT / "fuzz" / harness), f"-max_total_time={SECONDS}",
           "-timeout=60", "-rss_limit_mb=2048", "-malloc_limit_mb=1024", f"-max_len={max_len}",
           f"-artifact_prefix={artifacts}/", "-print_final_stats=1", *dirs]
    env = dict(os.environ, L3IC_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 300, env=env,
                       cwd=tmp_path)
    log = r.stdout + r.stderr
    found = sorted(p.name for p in artifacts.iterdir())
    assert r.returncode == 0 and not found, f"{harness}: {found}\n{log[-6000:]}"
    runs = [int(line.split()[-1]) for line in log.splitlines()
            if line.startswith("stat::number_of_executed_units")]
    assert runs and runs[0] > 100, log[-3000:]
    print(f"{harness}: {runs[0]} executions in {SECONDS} s")

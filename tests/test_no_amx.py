"""benchmarks/no_amx.py: the AMX permission request fails under it, other system calls pass."""
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                reason="Linux x86-64 only")

PROBE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
r = libc.syscall(158, 0x1023, 18)          # arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)
print(r, ctypes.get_errno(), os.getpid() > 0, open(__file__).read(7).strip())
"""


def _run(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "no_amx.py"), str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1]), out[2:]


def test_amx_request_refused_with_eperm(tmp_path):
    r, errno, rest = _run(tmp_path)
    assert (r, errno) == (-1, 1)             # EPERM, from the filter
    assert rest == ["True", "import"]        # getpid and file reads still work


#!/usr/bin/env python3
"""Run a benchmark with Intel AMX refused, so XNNPACK falls back to its AVX-512 VNNI kernels:
an A/B of AMX on one machine (docs/speed.md).  Linux x86-64 only.

    python benchmarks/no_amx.py benchmarks/speed.py -q 32c --no-cold --rss-sizes ''

Linux hands AMX tile data to a process only after arch_prctl(ARCH_REQ_XCOMP_PERM); XNNPACK asks
once when it starts and uses its AMX kernels if that succeeds.  A seccomp filter installed here
makes that one request fail with EPERM (every other system call passes); child processes inherit
the filter, so the fresh processes of the cold-start and RSS measurements run without AMX too.
"""
import ctypes
import runpy
import struct
import sys

SYS_ARCH_PRCTL = 158          # x86-64
ARCH_REQ_XCOMP_PERM = 0x1023
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
EPERM = 1


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def refuse_amx() -> None:
    """Install the filter (classic BPF over struct seccomp_data: nr at offset 0, the low half of
    args[0] at offset 16)."""
    ld, jeq, ret = 0x20, 0x15, 0x06   # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    allow, deny = 0x7FFF0000, 0x00050000 | EPERM
    code = [(ld, 0, 0, 0), (jeq, 0, 3, SYS_ARCH_PRCTL), (ld, 0, 0, 16),
            (jeq, 0, 1, ARCH_REQ_XCOMP_PERM), (ret, 0, 0, deny), (ret, 0, 0, allow)]
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *c) for c in code))
    prog = _Program(len(code), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if (libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0):
        raise OSError(ctypes.get_errno(), "cannot install the seccomp filter")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    refuse_amx()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")

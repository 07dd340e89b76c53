#!/usr/bin/env bash
# Coverage reached by the campaign corpora (docs/security.md), replayed without sanitizers:
#   C      _fse/fse_*.c + fse_internal.h lines/branches/functions: fuzz/fuzz_fse.c built with
#          clang source-based coverage, run over the fse corpus (-runs=0), llvm-cov report.
#   Python PIL_l3ic (container, codec, plugin, runtime) lines/branches: fuzz/replay.py
#          --coverage over the decode corpus (coverage.py).
#
#   fuzz/coverage.sh            corpora from $FUZZ_WORK (default /tmp/l3ic_fuzz)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${FUZZ_WORK:-/tmp/l3ic_fuzz}"
CC="${CC:-$(command -v clang || command -v clang-14)}"
VER="$("$CC" --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p')"
PROFDATA="$(command -v llvm-profdata-"$VER" || command -v llvm-profdata)"
LLVMCOV="$(command -v llvm-cov-"$VER" || command -v llvm-cov)"
OUT="$ROOT/fuzz/build/cov"
mkdir -p "$OUT"

FSE_C=("$ROOT"/_fse/fse_*.c)   # the C coder (not _fse/_fse.c, which Cython generates)
echo "== C: _fse/fse_*.c over $WORK/corpus_fse + seeds"
"$CC" -g -O1 -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping -I"$ROOT/_fse" \
    "$ROOT/fuzz/fuzz_fse.c" "${FSE_C[@]}" -lm -lpthread -o "$OUT/fuzz_fse_cov"
rm -f "$OUT"/*.profraw
DIRS=("$WORK/corpus_fse")
[ -d "$WORK/seeds_fse/fse" ] && DIRS+=("$WORK/seeds_fse/fse")
[ -d "$ROOT/fuzz/regressions/fse" ] && DIRS+=("$ROOT/fuzz/regressions/fse")
LLVM_PROFILE_FILE="$OUT/fse.profraw" nice -n 15 "$OUT/fuzz_fse_cov" -runs=0 "${DIRS[@]}" \
    >"$OUT/replay_fse.log" 2>&1
"$PROFDATA" merge -sparse "$OUT/fse.profraw" -o "$OUT/fse.profdata"
"$LLVMCOV" report "$OUT/fuzz_fse_cov" -instr-profile="$OUT/fse.profdata" "${FSE_C[@]}" \
    "$ROOT/_fse/fse_internal.h"   # its inline helpers (bit writer / reader)

echo "== Python: PIL_l3ic over $WORK/corpus_decode + seeds"
DIRS=("$WORK/corpus_decode")
[ -d "$WORK/seeds_decode/decode" ] && DIRS+=("$WORK/seeds_decode/decode")
[ -d "$ROOT/fuzz/regressions/decode" ] && DIRS+=("$ROOT/fuzz/regressions/decode")
(cd "$OUT" && nice -n 15 python "$ROOT/fuzz/replay.py" --coverage decode "${DIRS[@]}" 2>&1 \
    | grep -v "^INFO: ")

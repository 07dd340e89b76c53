#!/usr/bin/env bash
# Build the sanitized fuzzing targets out of tree (never touches the in-place PIL_l3ic/_fse*.so).
#
#   fuzz/build_sanitized.sh            -> fuzz/build/ext/PIL_l3ic/_fse*.so   (Python extension)
#                                         fuzz/build/fuzz_fse                 (libFuzzer binary, clang only)
#                                         fuzz/build/fuzz_fse_generic         (same, -DFSE_NO_BMI2)
#
# Extension: setup.py's L3IC_SANITIZE=1 switch (-fsanitize=address,undefined -O1 -g).  With clang
# (CC, default clang if found) it is also built with -fsanitize=fuzzer-no-link, so atheris gets
# coverage feedback from the C code, and must run with atheris' asan_with_fuzzer.so preloaded
# (fuzz/run_campaign.sh does that).  With gcc only, the extension uses gcc's libasan/libubsan and
# atheris sees Python coverage only.
#
# libFuzzer binary: fuzz/fuzz_fse.c + _fse/fse_*.c with -fsanitize=fuzzer,address,undefined and
# -fno-sanitize-recover=all (every UBSan report aborts, i.e. is a crash).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/fuzz/build"
CC="${CC:-$(command -v clang || command -v clang-14 || command -v gcc)}"
mkdir -p "$OUT"

SRC="$(mktemp -d)"
trap 'rm -rf "$SRC"' EXIT
cp "$ROOT/setup.py" "$SRC/"
mkdir -p "$SRC/_fse" "$SRC/PIL_l3ic"
FSE_C=("$ROOT"/_fse/fse_*.c)   # the C coder (not _fse/_fse.c, which Cython generates)
cp "${FSE_C[@]}" "$ROOT"/_fse/fse*.h "$ROOT"/_fse/_fse.pyx "$SRC/_fse/"

EXTRA=""
KIND=gcc
if "$CC" --version 2>/dev/null | grep -qi clang; then
    EXTRA="-fsanitize=fuzzer-no-link"
    KIND=clang
fi
echo "building sanitized extension with $CC ($KIND)" >&2
(cd "$SRC" && CC="$CC" LDSHARED="$CC -shared" CFLAGS="$EXTRA -fno-sanitize-recover=undefined" \
    LDFLAGS="$EXTRA" L3IC_SANITIZE=1 python setup.py -q build_ext --inplace >"$OUT/build_ext.log" 2>&1) \
    || { cat "$OUT/build_ext.log" >&2; exit 1; }
rm -rf "$OUT/ext"
mkdir -p "$OUT/ext/PIL_l3ic"
cp "$SRC"/PIL_l3ic/_fse*.so "$OUT/ext/PIL_l3ic/"
echo "$KIND" > "$OUT/ext/KIND"
# what was built (the C coder under test may be uncommitted work)
(cd "$ROOT" && { git rev-parse HEAD; sha256sum _fse/fse_*.c _fse/fse*.h _fse/_fse.pyx; }) > "$OUT/ext/SOURCES"

if [ "$KIND" = clang ]; then
    "$CC" -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=all -I"$ROOT/_fse" \
        "$ROOT/fuzz/fuzz_fse.c" "${FSE_C[@]}" -lm -lpthread -o "$OUT/fuzz_fse"
    # the same without the BMI2 clones of the coding loops (what CPUs without BMI2 run)
    "$CC" -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=all -DFSE_NO_BMI2 -I"$ROOT/_fse" \
        "$ROOT/fuzz/fuzz_fse.c" "${FSE_C[@]}" -lm -lpthread -o "$OUT/fuzz_fse_generic"
    echo "built $OUT/fuzz_fse $OUT/fuzz_fse_generic" >&2
fi
echo "built $(ls "$OUT"/ext/PIL_l3ic/_fse*.so)" >&2

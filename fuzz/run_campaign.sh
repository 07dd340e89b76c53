#!/usr/bin/env bash
# Run one fuzzing campaign under AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   fuzz/run_campaign.sh decode RUNS [libFuzzer flags...]   whole decode path (atheris)
#   fuzz/run_campaign.sh fse    RUNS [libFuzzer flags...]   entropy decoder, C (libFuzzer)
#   fuzz/run_campaign.sh fse-generic RUNS ...              the same built with -DFSE_NO_BMI2
#   fuzz/run_campaign.sh fse-py RUNS [libFuzzer flags...]   entropy decoder via Python (atheris)
#
# RUNS: executions (libFuzzer -runs); 0 replays the corpora only.  Work files live in
# $FUZZ_WORK (default /tmp/l3ic_fuzz): seeds_<target>/ (regenerated every run by make_corpus.py with the
# installed models), corpus_<target>/ (kept between runs), artifacts_<target>/ (crashes, leaks,
# timeouts, OOMs: minimise and copy them to fuzz/regressions/<target>/), <target>.log.
# The campaign runs at nice 15.  Limits: -timeout (wall, default 120 s: only a backstop, since a wall
# limit also fires when the campaign is paused or starved; the harnesses themselves fail
# any input that takes more than 2 s of CPU time), -rss_limit_mb, -malloc_limit_mb=1024.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${1:?target: decode | fse | fse-generic | fse-py}"
RUNS="${2:?number of executions}"
shift 2
WORK="${FUZZ_WORK:-/tmp/l3ic_fuzz}"
BUILD="$ROOT/fuzz/build"
mkdir -p "$WORK"

if [ ! -d "$BUILD/ext" ] || [ -n "${FUZZ_REBUILD:-}" ]; then
    nice -n 15 "$ROOT/fuzz/build_sanitized.sh"
fi
KIND="$(cat "$BUILD/ext/KIND")"
ATHERIS="$(python -c 'import atheris, os; print(atheris.path())')"
if [ "$KIND" = clang ]; then
    PRELOAD="$ATHERIS/asan_with_fuzzer.so"
else
    PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
fi
export ASAN_OPTIONS="detect_leaks=0:alloc_dealloc_mismatch=0:allocator_may_return_null=1:detect_stack_use_after_return=0:handle_segv=1:abort_on_error=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export L3IC_FUZZ_EXT="$BUILD/ext"
export L3IC_NUM_THREADS=1
export PYTHONDONTWRITEBYTECODE=1

SEEDS="$WORK/seeds_$TARGET"
rm -rf "$SEEDS"
LD_PRELOAD="$PRELOAD" nice -n 15 python "$ROOT/fuzz/make_corpus.py" "$SEEDS" >"$WORK/seeds_$TARGET.log" 2>&1 \
    || { cat "$WORK/seeds_$TARGET.log" >&2; exit 1; }
tail -1 "$WORK/seeds_$TARGET.log" >&2

CORPUS="$WORK/corpus_$TARGET"
ART="$WORK/artifacts_$TARGET"
mkdir -p "$CORPUS" "$ART"
COMMON=(-runs="$RUNS" -timeout="${FUZZ_TIMEOUT:-120}" -malloc_limit_mb=1024
        -artifact_prefix="$ART/" -print_final_stats=1 -print_pcs=0)
REG="$ROOT/fuzz/regressions"
case "$TARGET" in
    decode)
        DIRS=("$CORPUS" "$SEEDS/decode")
        [ -d "$REG/decode" ] && DIRS+=("$REG/decode")
        exec env LD_PRELOAD="$PRELOAD" nice -n 15 python "$ROOT/fuzz/fuzz_decode.py" \
            "${COMMON[@]}" -rss_limit_mb="${FUZZ_RSS_MB:-1536}" -max_len=16384 "$@" "${DIRS[@]}" ;;
    fse-py)
        DIRS=("$CORPUS" "$SEEDS/fse")
        [ -d "$REG/fse" ] && DIRS+=("$REG/fse")
        exec env LD_PRELOAD="$PRELOAD" nice -n 15 python "$ROOT/fuzz/fuzz_fse.py" \
            "${COMMON[@]}" -rss_limit_mb="${FUZZ_RSS_MB:-1536}" -max_len=65536 "$@" "${DIRS[@]}" ;;
    fse|fse-generic)
        BIN="$BUILD/fuzz_${TARGET/-/_}"
        [ -x "$BIN" ] || { echo "no $BIN (needs clang)" >&2; exit 1; }
        DIRS=("$CORPUS" "$SEEDS/fse")
        [ -d "$REG/fse" ] && DIRS+=("$REG/fse")
        exec nice -n 15 "$BIN" "${COMMON[@]}" -rss_limit_mb="${FUZZ_RSS_MB:-1024}" \
            -max_len=65536 "$@" "${DIRS[@]}" ;;
    *) echo "unknown target $TARGET" >&2; exit 2 ;;
esac

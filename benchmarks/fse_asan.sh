#!/usr/bin/env bash
# Build PIL_l3ic._fse with AddressSanitizer + UndefinedBehaviorSanitizer (setup.py's
# L3IC_SANITIZE=1 switch) into a temporary directory -- the normal in-place build is not
# touched -- and run the entropy-coder tests (round trips, properties, mutations) against
# that build.  Python itself is not instrumented, so libasan is preloaded.
#
#   benchmarks/fse_asan.sh            # all fse tests
#   benchmarks/fse_asan.sh -k mutation
#
# Exit status: pytest's (a sanitizer report aborts the run and fails it).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fse_asan.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

echo "== building the sanitized extension in $TMP"
L3IC_SANITIZE=1 "$PY" setup.py -q build_ext --build-lib "$TMP/lib" --build-temp "$TMP/build" >"$TMP/build.log" 2>&1 \
    || { cat "$TMP/build.log"; exit 1; }
SO=$(ls "$TMP"/lib/PIL_l3ic/_fse*.so)
case "$(nm -D "$SO")" in *__asan_init*) ;; *) echo "extension is not instrumented: $SO"; exit 1;; esac

CC=${CC:-gcc}
LIBASAN=$($CC -print-file-name=libasan.so)
LIBUBSAN=$($CC -print-file-name=libubsan.so)
[ -e "$LIBASAN" ] || { echo "libasan not found ($LIBASAN)"; exit 1; }

export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
export L3IC_FSE_SO="$SO"
echo "== running tests/test_fse*.py against $SO"
LD_PRELOAD="$LIBASAN $LIBUBSAN" "$PY" -m pytest -q -p no:cacheprovider tests/test_fse.py tests/test_fse_mutation.py \
    tests/test_fse_context.py "$@"

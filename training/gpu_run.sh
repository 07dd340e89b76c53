#!/usr/bin/env bash
# The one command for a lent GPU machine (device tool `run`, carry ["gpu_data"], timeout_s 600):
#
#     bash training/gpu_run.sh 8
#
# Trains the gdn16 hp model (training.hp_torch_train) for MINUTES of wall clock, loading
# included, from gpu_data/init.npz when it is there (else from Keras' initialisers), and writes
# $OUT/hp_gpu.npz (hp_train's Keras layout, float16, ~8 MiB: every 2 minutes and at the end) and
# $OUT/train.log. Arguments after MINUTES go to training.hp_torch_train (--batch, --lr, ...).
# Needs python3 with torch, numpy and Pillow (the device image has them); installs nothing.
# Prepare here first: python -m training.gpu_data init <npz>; python -m training.gpu_data pack
set -uo pipefail
MINUTES=${1:-8}
shift $(( $# > 0 ? 1 : 0 ))
OUT=${OUT:-/tmp/hp_gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
python3 -c 'import torch, numpy, PIL
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "numpy", numpy.__version__,
      "Pillow", PIL.__version__)' || exit 1
if [ ! -f gpu_data/manifest.json ]; then
    echo "gpu_data/ is missing: run python -m training.gpu_data pack, and carry gpu_data" >&2
    exit 1
fi
INIT=()
if [ -f gpu_data/init.npz ]; then INIT=(--init gpu_data/init.npz); fi
python3 -m training.hp_torch_train --data gpu_data "${INIT[@]}" --out "$OUT/hp_gpu.npz" \
    --minutes "$MINUTES" "$@" 2>&1 | tee "$OUT/train.log"
rc=${PIPESTATUS[0]}
ls -l "$OUT"
exit "$rc"

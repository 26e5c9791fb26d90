#!/usr/bin/env bash
# Paper-preset benchmarks on a CUDA machine, all results in one folder, in under 8 minutes:
#   1. training step of WEFT / full fine-tuning / frozen backbone: ViT-L (24 blocks, width 1024)
#      + Mask2Former head, 512x512, batch 6, bf16, gradient checkpointing on, then off;
#   2. inference, whole vs slide, fp32 vs bf16, eager, then compiled (torch.compile).
# Each part runs under its own time limit so that a slow part cannot eat the others' time.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        (default benchmarks/results/gpu)
#
# Python: $PYTHON if set, else .venv/bin/python or python3 when they already import the
# project; otherwise a venv (.venv-gpu) reusing the machine's packages gets `pip install -e .`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
mkdir -p "$OUT"
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET_S:-470}

find_python() {
    for candidate in "${PYTHON:-}" .venv/bin/python python3; do
        if [ -n "$candidate" ] && "$candidate" -c "import weft_lightning, torch" 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    python3 -m venv --system-site-packages .venv-gpu >&2
    .venv-gpu/bin/python -m pip install --quiet -e . >&2
    echo .venv-gpu/bin/python
}

PY=$(find_python)
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device visible to torch')"
{ nvidia-smi || true; "$PY" -c "import torch; print('torch', torch.__version__)"; } >"$OUT/env.txt" 2>&1

# run LIMIT_S NAME COMMAND...: one part under min(LIMIT_S, time left), its log in $OUT/NAME.log.
run() {
    local limit=$1 name=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    ((limit > left)) && limit=$left
    if ((limit < 20)); then
        echo "gpu_check: skipped $name (time budget spent)" | tee -a "$OUT/skipped.txt"
        return 0
    fi
    echo "gpu_check: $name (limit ${limit}s)"
    if ! timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        echo "gpu_check: $name failed or timed out, see $OUT/$name.log" | tee -a "$OUT/skipped.txt"
    fi
}

TRAIN=(benchmarks/bench_train_step.py --preset paper --device cuda --batch 6 --precision bf16
    --warmup 3 --steps 10)
run 150 train_step_cp "$PY" "${TRAIN[@]}" --with-cp --out "$OUT/train_step_paper_bf16_cp.json"
run 150 train_step_nocp "$PY" "${TRAIN[@]}" --no-with-cp --out "$OUT/train_step_paper_bf16_nocp.json"
INFER=(benchmarks/bench_inference.py --preset paper --device cuda --warmup 3 --repeats 10)
run 60 inference "$PY" "${INFER[@]}" --compile off --out "$OUT/inference_paper.json"
run 240 inference_compiled "$PY" "${INFER[@]}" --compile on --out "$OUT/inference_paper_compiled.json"

"$PY" benchmarks/common.py readme "$OUT"
echo "gpu_check: done in $((SECONDS - START)) s; results in $OUT"

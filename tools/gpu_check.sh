#!/bin/bash
# The first-GPU check: what CPU CI cannot run, in one script, under 10 minutes on one GPU.
#
#   tools/gpu_check.sh [--out DIR] [--skip-step]
#
# Steps (each prints PASS/FAIL; the script exits 1 if any failed):
#   1. pytest -m gpu: the GPU-marked tests, among them attention kernels vs the CPU reference and
#      TE, and our CP zigzag split vs TE's thd_get_partitioned_indices (tests/unit/runtime/test_zigzag_te_gpu.py).
#   2. One bf16 training step of Qwen3-8B-shaped layers (4 layers, 32K bins, TE backend) through the
#      Trainer (tools/bench_step.py), its peak memory against the planner's estimate for the same
#      layout (FAIL above 1.05x the plan).
#      On one GPU the layout is TP1 CP1 without SP: TP2 x CP2 needs 4 ranks, and NCCL cannot run
#      several ranks on one device. The recipe layout (TP4 CP2 SP) needs a node: slurm/train.sbatch.
#
# Exit codes: 0 all passed; 1 a check failed; 2 bad arguments; 77 skipped (no CUDA GPU visible),
# the automake/ctest convention for "skipped", so CI on a CPU machine can tell skip from pass.
set -euo pipefail

# Time limits: 240 s of tests + 330 s for the step stay under 10 minutes.
EXIT_SKIP=77
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
OUT=""
RUN_STEP=1

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --out)
            [[ $# -ge 2 && -n "$2" ]] || { echo "gpu_check: --out needs a directory" >&2; exit 2; }
            OUT="$2"; shift 2 ;;
        --skip-step) RUN_STEP=0; shift ;;
        *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: skipped: no CUDA GPU visible to $PYTHON (torch.cuda.is_available() is False);" \
         "run this on a GPU node, inside the container of docs/cluster.md"
    exit "$EXIT_SKIP"
fi

OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
export CUDA_DEVICE_MAX_CONNECTIONS="${CUDA_DEVICE_MAX_CONNECTIONS:-1}"
cd "$REPO"
"$PYTHON" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), "torch", torch.__version__, "cuda", torch.version.cuda)'
failed=0

echo "== 1/2 pytest -m gpu"
if timeout 240 "$PYTHON" -m pytest -q -m gpu tests 2>&1 | tee "$OUT/pytest_gpu.log"; then
    echo "PASS gpu tests"
else
    echo "FAIL gpu tests (log: $OUT/pytest_gpu.log)"
    failed=1
fi

if [[ "$RUN_STEP" == 1 ]]; then
    echo "== 2/2 one bf16 step, Qwen3-8B-shaped layers x4, 32K bins, TP1 CP1, TE"
    if timeout 330 "$PYTHON" tools/bench_step.py --device gpu --backends te --layers 4 --reps 1 --warmup 1 \
            --out "$OUT/step.json" 2>&1 | tee "$OUT/step.log"; then
        echo "PASS bf16 step (result: $OUT/step.json)"
    else
        echo "FAIL bf16 step (log: $OUT/step.log)"
        failed=1
    fi
    # The step's peak (torch.cuda.max_memory_allocated: no CUDA context or NCCL buffers) against the
    # planner without its workspace allowance; more than 5% over the plan fails (the planner's tolerance).
    if ! STEP_JSON="$OUT/step.json" "$PYTHON" - <<'PY' 2>&1 | tee "$OUT/plan.txt"; then
import dataclasses, json, os, sys
from nemo_terminal.models.qwen3 import qwen3_size
from nemo_terminal.runtime.parallel import ParallelConfig
from nemo_terminal.training.planner import GIB, PlanInput, estimate

model = dataclasses.replace(qwen3_size("8b"), num_hidden_layers=4)
plan = estimate(PlanInput(model=model, parallel=ParallelConfig(), seq_length=32768, num_gpus=1,
                          global_batch_size=4, rope_fusion=True, workspace_gib=0.0)).total / GIB  # TE: fused RoPE
peak = json.load(open(os.environ["STEP_JSON"]))["backends"]["te"]["gpu_peak_mem_gib"]
print(f"memory: step peak {peak:.2f} GiB, planner {plan:.2f} GiB (no workspace allowance): {peak / plan:.2f}x")
sys.exit(0 if peak <= 1.05 * plan else 1)
PY
        echo "FAIL memory vs planner (see $OUT/plan.txt)"
        failed=1
    else
        echo "PASS memory vs planner"
    fi
fi

if [[ "$failed" == 0 ]]; then
    echo "gpu_check: all passed (outputs in $OUT)"
else
    echo "gpu_check: FAILED (outputs in $OUT)"
fi
exit "$failed"

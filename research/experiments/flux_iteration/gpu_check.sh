#!/usr/bin/env bash
# GRPO iterations of the FLUX.1-dev architecture (random weights, 512 px, bf16, one prompt group of 24) on one GPU,
# from the repository root:
#   bash research/experiments/flux_iteration/gpu_check.sh [OUT]
# 1. FLOW_ITERS (default 2) iterations with Flow-GRPO's sparse credit (the second is the steady-state time);
# 2. one iteration with DenseGRPO's credit (ODE denoising of every intermediate latent, n = t).
# Each stage has its own time limit (FLOW_S, DENSE_S seconds), so a slow one does not starve the next; the metrics
# of a stage cut short are kept. OUT (default runs/flux_gpu) receives results.jsonl and each variant's metrics.
# OVERRIDE (JSON, deep-merged into both variants) shrinks the run for a CPU check of the script, e.g.
#   OVERRIDE='{"model": {"name": "flux_dev_random_2blocks", "dtype": "float32", "resolution": 128,
#              "max_sequence_length": 16}, "sampler": {"steps": 2}, "train": {"group_size": 2, "micro_batch": 2}}'
# On a machine without dgx, research/scripts/bare_machine_env.sh puts it on PYTHONPATH and installs wheels from .whl/ (the
# list is in research/experiments/sd35m_iteration/gpu_check.sh).
set -u
runs=runs/flux_gpu
out=${1:-$runs}
rm -rf "$runs"; mkdir -p "$runs" "$out"
source research/scripts/bare_machine_env.sh

cfg=research/experiments/flux_iteration/flux_dev_random.yaml
over=${OVERRIDE:-"{}"}
echo "== 1. FLUX.1-dev architecture, Flow-GRPO, ${FLOW_ITERS:-2} iteration(s)"
timeout "${FLOW_S:-320}" python3 research/scripts/time_iteration.py "$cfg" --variant flow_grpo --iterations "${FLOW_ITERS:-2}" --out "$runs" --override "$over"
echo "flow rc=$?"
echo "== 2. FLUX.1-dev architecture, DenseGRPO, 1 iteration"
timeout "${DENSE_S:-250}" python3 research/scripts/time_iteration.py "$cfg" --variant dense_grpo --iterations 1 --out "$runs" --override "$over"
echo "dense rc=$?"
cp "$runs/results.jsonl" "$out/results.jsonl" 2>/dev/null
for v in flow_grpo dense_grpo; do cp "$runs/$v/metrics.jsonl" "$out/${v}_metrics.jsonl" 2>/dev/null; done
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
exit 0

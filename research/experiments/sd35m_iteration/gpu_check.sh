#!/usr/bin/env bash
# The SD3.5-M-sized GPU checks, in one run (5 min on one H200; its stages' time limits add up to 9), from the repository root:
#   bash research/experiments/sd35m_iteration/gpu_check.sh [OUT]
# 1. two GRPO iterations (Flow-GRPO credit) of the SD3.5-M architecture, random weights, 512 px, bf16;
# 2. one DenseGRPO iteration of the same (ODE denoising of every intermediate latent);
# 3. the quick shapes ablation (calibration, training, evaluation) on the GPU, cut to 10 iterations.
# Each stage has its own time limit, so that a slow one does not starve the next. Runs go to runs/gpu_check;
# OUT (default: that folder) receives the summaries: sd35m_results.jsonl, the SD3.5-M runs' metrics
# (kept when a stage runs out of time), shapes_report.md, shapes_cost.md.
# Without an installed dgx (a bare machine with PyTorch) research/scripts/bare_machine_env.sh puts the four packages on PYTHONPATH; wheels of
# what else is missing can be placed in .whl/ and are installed into /tmp/site first. For the H200 image of
# commit 3b581b9 (torch, transformers, peft, accelerate present) that was, from a machine with pip access:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
#     diffusers==0.42.1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     importlib_metadata==10.2.0 typing_extensions==4.16.0
set -u
runs=runs/gpu_check
out=${1:-${OUT:-$runs}}
rm -rf "$runs"; mkdir -p "$runs" "$out"
source research/scripts/bare_machine_env.sh

cfg=research/experiments/sd35m_iteration/sd35m_random.yaml
echo "== 1. SD3.5-M architecture, Flow-GRPO, 2 iterations"
timeout 230 python3 research/scripts/time_iteration.py "$cfg" --variant flow_grpo --iterations 2 --out "$runs/sd35m"
echo "== 2. SD3.5-M architecture, DenseGRPO, 1 iteration"
timeout 170 python3 research/scripts/time_iteration.py "$cfg" --variant dense_grpo --iterations 1 --out "$runs/sd35m"
cp "$runs/sd35m/results.jsonl" "$out/sd35m_results.jsonl" 2>/dev/null
for v in flow_grpo dense_grpo; do cp "$runs/sd35m/$v/metrics.jsonl" "$out/sd35m_${v}_metrics.jsonl" 2>/dev/null; done
echo "== 3. quick shapes ablation on the GPU, 10 iterations"
start=$(date +%s)
timeout 130 python3 -m dgx.grpo.cli run configs/shapes_geneval.yaml --iterations 10 --out "$runs/shapes_quick"
echo "shapes_quick rc=$? wall_s=$(( $(date +%s) - start ))"
cp "$runs/shapes_quick/report.md" "$out/shapes_report.md" 2>/dev/null
cp "$runs/shapes_quick/cost.md" "$out/shapes_cost.md" 2>/dev/null
nvidia-smi --query-gpu=name,memory.used --format=csv

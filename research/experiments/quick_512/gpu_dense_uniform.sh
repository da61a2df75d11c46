#!/usr/bin/env bash
# DenseGRPO with Flow-GRPO's uniform a = 0.7 noise schedule (no calibration) at 512 samples per iteration,
# trained from scratch on a GPU for SECONDS, then scored paired image by image with the base model on the three
# evaluation seeds of this folder. Tests whether the calibrated psi(t) is what holds DenseGRPO back here.
#   bash research/experiments/quick_512/gpu_dense_uniform.sh [SECONDS] [OUT]
# The base model's per-image records are copied from runs/quick512_gpu/paired/base when present (carry them to
# the GPU machine: they were scored on a GPU in commit 3b581b9), else scored here; all records go to the run's own
# paired/ folder, so the calibrated run's records of commit 3b581b9 are never overwritten. OUT (default
# runs/quick512_gpu_uniform) receives dense.log, run.tgz (the run folder without TensorBoard, written before scoring),
# paired.jsonl and paired.tgz (the per-image records); `tar xzf run.tgz` in the repository root continues the run on
# a CPU or the next GPU (`--resume`).
set -u
secs=${1:-420}
out=${2:-runs/quick512_gpu_uniform}
mkdir -p "$out"
source research/scripts/bare_machine_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
cfg=configs/shapes_geneval.yaml
run=runs/quick512_dense_uniform
timeout "$secs" python3 -m dgx.grpo.cli run "$cfg" --only dense_grpo --set train.prompts_per_iter=64 \
  --set 'sampler.noise={name: uniform, a: 0.7}' --iterations "${ITERATIONS:-205}" --out "$run" --resume > "$out/dense.log" 2>&1; rc=$?
tar czf "$out/run.tgz" --exclude=tensorboard "$run"
echo "training exit $rc: $(wc -l < "$run/dense_grpo/seed_0/metrics.jsonl") iterations logged, latest checkpoint $(cat "$run/dense_grpo/seed_0/checkpoints/latest")"
mkdir -p "$run/paired"
[ -d runs/quick512_gpu/paired/base ] && cp -r runs/quick512_gpu/paired/base "$run/paired/"
python3 research/scripts/paired_eval.py "$cfg" --variant dense_grpo --seeds 12345 1000 1001 --out "$run/paired" \
  --adapters "$run/dense_grpo/seed_0" | tee "$out/paired.jsonl"
tar czf "$out/paired.tgz" "$run/paired"

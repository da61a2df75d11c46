#!/usr/bin/env bash
# Does DenseGRPO's faster-rising training reward (SDE samples of training prompts) carry over to test prompts, under
# the training sampler and under the test's ODE? Trains the quick recipe's Flow-GRPO and DenseGRPO (uniform a = 0.7, so
# both sample alike) for each seed on this CPU, then scores the base model and every adapter on the same test images
# with three samplers (research/scripts/diagnose_samplers.py: ODE 20 steps, ODE 10, SDE 10 at a = 0.7) and pairs them image by
# image (sde_transfer.py). About 12 min per seed plus 2 min per model scored, on 2 cores.
#   bash research/experiments/quick_sweep/sde_transfer.sh [OUT]      # SEEDS="0 1 2" by default
set -eu
out=${1:-runs/sde_transfer}
cfg=configs/shapes_geneval.yaml
mkdir -p "$out"
for seed in ${SEEDS:-0 1 2}; do
  python research/scripts/sweep.py "$cfg" --variant flow_grpo --out "$out" --no-eval "flow_s$seed={\"seed\": $seed}"
  python research/scripts/sweep.py "$cfg" --variant dense_grpo --out "$out" --no-eval \
    "dense_uni_s$seed={\"seed\": $seed, \"sampler\": {\"noise\": {\"name\": \"uniform\", \"a\": 0.7}}}"
done
score() { [ -f "$out/records/$1.jsonl" ] || python research/scripts/diagnose_samplers.py "$cfg" --min-per-tag 128 --records "$out/records/$1.jsonl" "${@:2}"; }
score base
for run in "$out"/*_s*/; do score "$(basename "$run")" --adapter "$run"; done
python research/experiments/quick_sweep/sde_transfer.py "$out/records"

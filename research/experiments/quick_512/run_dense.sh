#!/bin/bash
# DenseGRPO (n = t, calibrated psi) with the same 64 x 8 = 512 samples per iteration on all the quick
# ablation's training prompts, 40 iterations (commit 5502055; about 80 min on 2 cores). Resumable: rerun it;
# `run_dense.sh 60` continues to 60 iterations, as the Flow-GRPO run (it trains on and evaluates again).
# Then the strict test score paired with the base model on the two further evaluation seeds.
set -e
ITERATIONS=${1:-40}
dgx run configs/shapes_geneval.yaml --only dense_grpo --set train.prompts_per_iter=64 --iterations "$ITERATIONS" \
  --out runs/quick512_dense --resume
python research/scripts/paired_eval.py configs/shapes_geneval.yaml --variant dense_grpo --seeds 12345 1000 1001 \
  --out runs/quick512_dense/paired --adapters runs/quick512_dense/dense_grpo/seed_0 | tee runs/quick512_dense/paired.jsonl

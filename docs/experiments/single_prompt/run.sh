#!/bin/bash
# Flow-GRPO and DenseGRPO (uniform a = 0.7) on one prompt; --paired 128: the reward of 128 ODE samples
# (20 steps) of that prompt, trained adapter minus base model on the same noise. Results in
# runs/single_prompt/results.jsonl.
set -e
for v in flow_grpo dense_grpo_uniform; do
  python scripts/sweep.py docs/experiments/single_prompt/square.yaml --variant $v --out runs/single_prompt --no-eval \
    --paired 128 "${v}={}"
done

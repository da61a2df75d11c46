#!/bin/bash
# The quick ablation's Flow-GRPO recipe on all its training prompts (tag-balanced) with 64 x 8 = 512
# samples per iteration instead of 4 x 8, for 60 iterations; then the strict test score paired image
# by image with the base model over three evaluation seeds. Results in runs/quick512/.
set -e
python research/scripts/sweep.py configs/shapes_geneval.yaml --variant flow_grpo --out runs/quick512 --paired 128 \
  'flow_512={"train": {"prompts_per_iter": 64, "iterations": 60}}'
python research/scripts/paired_eval.py configs/shapes_geneval.yaml --variant flow_grpo --seeds 12345 1000 1001 \
  --out runs/quick512/paired --adapters runs/quick512/flow_512 | tee runs/quick512/paired.jsonl

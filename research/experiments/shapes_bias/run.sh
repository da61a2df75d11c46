#!/bin/bash
# The shipped shapes model fine-tuned so that half of its training images show the caption's swapped twin
# (prompts.SWAP: circle<->square, triangle<->diamond and five colour pairs), one error shared by every prompt
# (8 min on 2 CPU cores); then the quick ablation on it, unchanged (10 min); the gains paired with its base on
# three evaluation seeds; a control run at lr 1e-12 (the base model's training reward on Flow-GRPO's prompts and
# noise, 3.5 min); and what the test images show (right, twin, neither) and how the samplers score them.
set -e
W=packages/rewards/src/dgx/rewards/shapes/weights
S="--set model.path=runs/shapes_bias/step_09000"
python scripts/train_shapes_model.py --out runs/shapes_bias --init-from $W --vae-from $W --caption-swap 0.5 \
  --steps 2000 --lr 5e-4 --save-every 500
dgx run configs/shapes_geneval.yaml $S --out runs/quick_bias
A="runs/quick_bias/flow_grpo/seed_0 runs/quick_bias/dense_grpo/seed_0"
python research/scripts/paired_eval.py configs/shapes_geneval.yaml $S --seeds 12345 1000 1001 --out runs/quick_bias/paired \
  --adapters $A | tee runs/quick_bias/paired.jsonl
dgx run configs/shapes_geneval.yaml $S --only flow_grpo --set train.lr=1e-12 --out runs/quick_bias_lr0
python research/scripts/diagnose_twins.py configs/shapes_geneval.yaml $S --adapters $A | tee runs/quick_bias/twins.jsonl
python research/scripts/diagnose_samplers.py configs/shapes_geneval.yaml $S | tee runs/quick_bias/samplers.jsonl
python research/scripts/diagnose_samplers.py configs/shapes_geneval.yaml $S --adapter runs/quick_bias/flow_grpo/seed_0 \
  | tee -a runs/quick_bias/samplers.jsonl
# The swap share 0.3 (swap03/): the same recipe, one evaluation seed.
python scripts/train_shapes_model.py --out runs/shapes_bias03 --init-from $W --vae-from $W --caption-swap 0.3 \
  --steps 2000 --lr 5e-4 --save-every 500
S3="--set model.path=runs/shapes_bias03/step_09000"
dgx run configs/shapes_geneval.yaml $S3 --out runs/quick_bias03
python research/scripts/diagnose_twins.py configs/shapes_geneval.yaml $S3 \
  --adapters runs/quick_bias03/flow_grpo/seed_0 runs/quick_bias03/dense_grpo/seed_0 | tee runs/quick_bias03/twins.jsonl

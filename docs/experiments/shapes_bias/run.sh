#!/bin/bash
# The shipped shapes model fine-tuned so that half of its training images show the caption's swapped twin
# (prompts.SWAP: circle<->square, triangle<->diamond and five colour pairs), one error shared by every prompt
# (8 min on 2 CPU cores); then the quick ablation on it, unchanged (10 min), and the gains paired with its base
# on three evaluation seeds. Results in runs/quick_bias/.
set -e
W=packages/rewards/src/dgx/rewards/shapes/weights
python scripts/train_shapes_model.py --out runs/shapes_bias --init-from $W --vae-from $W --caption-swap 0.5 \
  --steps 2000 --lr 5e-4 --save-every 500
dgx run configs/shapes_quick.yaml --set model.path=runs/shapes_bias/step_09000 --out runs/quick_bias
python scripts/paired_eval.py configs/shapes_quick.yaml --set model.path=runs/shapes_bias/step_09000 \
  --seeds 12345 1000 1001 --out runs/quick_bias/paired \
  --adapters runs/quick_bias/flow_grpo/seed_0 runs/quick_bias/dense_grpo/seed_0 | tee runs/quick_bias/paired.jsonl

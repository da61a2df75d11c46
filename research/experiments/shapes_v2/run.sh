#!/bin/bash
# Shapes model v2 (commit a1c9d04): the shipped architecture and data recipe, with shapes of 10-13 px kept
# 3 px apart (the shipped model: 8-11 px, 2 px), one 6000-step cosine stage; then the quick ablation
# on it, its test score, the VAE ceiling and single-object detections of both models (diagnose.jsonl),
# and where a rollout's outcome is set (exploration.jsonl).
set -e
python scripts/train_shapes_model.py --out runs/shapes_v2 --steps 6000 --cosine --save-every 1000 --sizes 10 13 --gap 3
dgx run research/experiments/shapes_v2/shapes_quick_v2.yaml --out runs/shapes_v2_quick
python research/scripts/eval_shapes_checkpoint.py runs/shapes_v2/step_06000 --guidance 5
for m in packages/rewards/src/dgx/rewards/shapes/weights runs/shapes_v2/step_06000; do
  python research/scripts/diagnose_shapes_model.py $m -n 256
done
python research/scripts/diagnose_exploration.py research/experiments/shapes_v2/shapes_quick_v2.yaml --prompts 8 --x0 8 --k 8 --a 0.7
# v3: the same layout with a wider transformer (6 blocks of width 128, 3.5 M parameters; 0.40 s per step here)
python scripts/train_shapes_model.py --out runs/shapes_v3 --steps 5000 --cosine --save-every 1000 --sizes 10 13 --gap 3 --layers 6 --heads 4
dgx run research/experiments/shapes_v2/shapes_quick_v3.yaml --out runs/shapes_v3_quick
python research/scripts/eval_shapes_checkpoint.py runs/shapes_v3/step_05000 --guidance 5
python research/scripts/diagnose_shapes_model.py runs/shapes_v3/step_05000 -n 256 --grid research/experiments/shapes_v2/single_object_v3.png  # diagnose_v3.jsonl

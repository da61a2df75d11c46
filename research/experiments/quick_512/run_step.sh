#!/bin/bash
# Is Flow-GRPO at 512 samples per iteration held back by its step size or by the KL term? The quick
# recipe at 64 x 8 samples for 60 iterations, once with lr 2e-3 (instead of 7e-4), once without the
# KL term (kl_beta 0 instead of 0.01; commit 069496d) and once with the paper's GenEval weight (kl_beta 0.04;
# commit 4550087); each scored paired with the base model on three evaluation seeds, against the base records
# of run.sh where they exist (copied, not overwritten). About 50 min each on 2 CPU cores.
set -e
for run in "lr2e-3 train.lr=2e-3" "kl0 train.kl_beta=0" "kl4e-2 train.kl_beta=0.04"; do
  set -- $run
  out=runs/quick512_$1
  dgx run configs/shapes_geneval.yaml --only flow_grpo --set train.prompts_per_iter=64 --set "$2" \
    --iterations 60 --out $out --resume
  mkdir -p $out/paired
  [ -d runs/quick512/paired/base ] && cp -rn runs/quick512/paired/base $out/paired/
  python research/scripts/paired_eval.py configs/shapes_geneval.yaml --variant flow_grpo --seeds 12345 1000 1001 \
    --out $out/paired --adapters $out/flow_grpo/seed_0 | tee $out/paired.jsonl
done

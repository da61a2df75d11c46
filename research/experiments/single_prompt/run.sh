#!/bin/bash
# Flow-GRPO and DenseGRPO (uniform a = 0.7) on one prompt; --paired 128: the reward of 128 ODE samples
# (20 steps) of that prompt, trained adapter minus base model on the same noise. Results in
# runs/single_prompt/results.jsonl. Commit f5bd626 (section 2 of the README): the graded (soft) reward,
# scored by partial credit and by the soft reward, 4x the samples per iteration, and where the
# outcome of a rollout is set (research/scripts/diagnose_exploration.py).
set -e
S="python research/scripts/sweep.py research/experiments/single_prompt/square.yaml --out runs/single_prompt --no-eval --paired 128"
for v in flow_grpo dense_grpo_uniform; do
  $S --variant $v "${v}={}"
done
$S --variant flow_grpo 'flow_128={"train": {"prompts_per_iter": 16}}'
for r in '{"soft":false}' '{"soft":true}'; do
  $S --variant flow_grpo --paired-reward "$r" 'flow_soft={"reward": {"soft": true}}' \
    'flow_soft_s1={"reward": {"soft": true}, "seed": 1}' 'flow_soft_s2={"reward": {"soft": true}, "seed": 2}' \
    'flow_soft_120={"reward": {"soft": true}, "train": {"iterations": 120}}'
  $S --variant dense_grpo_uniform --paired-reward "$r" 'dense_soft={"reward": {"soft": true}}'
done
python research/scripts/diagnose_exploration.py configs/shapes_geneval.yaml --prompts 8 --x0 8 --k 8 --a 0.3 0.7 1.2
# Commit f981152 (capacity.jsonl): reward-filtered fine-tuning of the same LoRA on the base model's winners, and its control
for lr in 7e-4 1e-4; do
  for f in "" --no-filter; do
    python research/scripts/diagnose_capacity.py research/experiments/single_prompt/square.yaml --samples 512 --steps 400 \
      --eval-at 50 100 200 400 --lr $lr --out runs/single_prompt/capacity.jsonl $f
  done
done
for f in "" --no-filter; do  # without classifier-free guidance
  python research/scripts/diagnose_capacity.py research/experiments/single_prompt/square.yaml --samples 512 --steps 400 \
    --eval-at 100 200 400 --guidance 1 --out runs/single_prompt/capacity.jsonl $f
done
# Commit f981152: 16x the samples per iteration (README "512 samples per iteration fit the prompt") and its plot
for n in 30 60; do  # paired gain after 30 iterations, then resumed to 60
  $S --variant flow_grpo "flow_512={\"train\": {\"prompts_per_iter\": 64, \"iterations\": $n}}"
done
# DenseGRPO at 512: commit f981152 stopped it at 25 iterations; commit 063f6f8 resumed it to 30 and 60
for n in 30 60; do
  $S --variant dense_grpo_uniform "dense_512={\"train\": {\"prompts_per_iter\": 64, \"iterations\": $n}}"
done
python -c "from pathlib import Path; from dgx.eval.plots import plot_learning_curves as p; r = Path('runs/single_prompt'); \
p({'Flow-GRPO, 128 samples/iteration': [r / 'flow_128/metrics.jsonl'], 'Flow-GRPO, 512 samples/iteration': [r / 'flow_512/metrics.jsonl'], \
'DenseGRPO (a = 0.7), 512 samples/iteration': [r / 'dense_512/metrics.jsonl']}, \
r / 'samples_per_iteration.png')"

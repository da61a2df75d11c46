#!/bin/bash
# Every credit wrapper on the smooth "ink" reward, three seeds; results in runs/credit_ink/results.jsonl.
for seed in ${SEEDS:-0 1 2}; do
  python research/scripts/sweep.py research/experiments/credit_ink/ink.yaml --out runs/credit_ink --no-eval --paired 32 \
    "sparse_s$seed={\"seed\": $seed}" \
    "coca_s$seed={\"seed\": $seed, \"credit\": {\"name\": \"coca\"}}" \
    "dense_latent_s$seed={\"seed\": $seed, \"credit\": {\"name\": \"dense_latent\", \"ode_steps\": \"t\"}}" \
    "dense_gain_s$seed={\"seed\": $seed, \"credit\": {\"name\": \"dense_gain\", \"ode_steps\": \"t\"}}" \
    "dense_gain_n2_s$seed={\"seed\": $seed, \"credit\": {\"name\": \"dense_gain\", \"ode_steps\": 2}}" \
    "dense_gain_n1_s$seed={\"seed\": $seed, \"credit\": {\"name\": \"dense_gain\", \"ode_steps\": 1}}"
done

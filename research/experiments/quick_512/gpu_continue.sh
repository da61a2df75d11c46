#!/usr/bin/env bash
# Continue the two 512-samples-per-iteration runs of this folder (Flow-GRPO in runs/quick512/flow_512,
# DenseGRPO in runs/quick512_dense, 60 iterations each on the CPU) on a GPU, side by side, for SECONDS
# of training each; then score both (their latest checkpoints) paired image by image with the base
# model on three evaluation seeds, all on the same device.
#   bash research/experiments/quick_512/gpu_continue.sh [SECONDS] [OUT]
# FLOW_ITERATIONS / DENSE_ITERATIONS (default 1000) end a run earlier, e.g. DenseGRPO at Flow-GRPO's 205.
# A run stopped at the time limit keeps its last checkpoint (every 5 iterations); rerunning continues it.
# OUT (default runs/quick512_gpu) receives paired.jsonl and runs.tgz: both run folders (no TensorBoard)
# and the per-image records (as runs/quick512_gpu/paired). Unpacked in the repository root (`tar xzf runs.tgz`), the run
# folders continue from there, on the next GPU or on a CPU (checkpoints load on either).
set -u
secs=${1:-300}
out=${2:-runs/quick512_gpu}
mkdir -p "$out"
source research/scripts/bare_machine_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
cfg=configs/shapes_geneval.yaml
timeout "$secs" python3 research/scripts/sweep.py "$cfg" --variant flow_grpo --out runs/quick512 --no-eval \
  'flow_512={"train": {"prompts_per_iter": 64, "iterations": '"${FLOW_ITERATIONS:-1000}"'}}' > "$out/flow.log" 2>&1 &
timeout "$secs" python3 -m dgx.grpo.cli run "$cfg" --only dense_grpo --set train.prompts_per_iter=64 --iterations "${DENSE_ITERATIONS:-1000}" \
  --out runs/quick512_dense --resume > "$out/dense.log" 2>&1 &
wait
for f in runs/quick512/flow_512 runs/quick512_dense/dense_grpo/seed_0; do
  echo "$f: $(wc -l < "$f/metrics.jsonl") iterations logged, latest checkpoint $(cat "$f/checkpoints/latest")"
done
python3 research/scripts/paired_eval.py "$cfg" --variant dense_grpo --seeds 12345 1000 1001 --out "$out/paired" \
  --adapters runs/quick512/flow_512 runs/quick512_dense/dense_grpo/seed_0 | tee "$out/paired.jsonl"
tar czf "$out/runs.tgz" --exclude=tensorboard runs/quick512/flow_512 runs/quick512_dense \
  -C "$out" --transform "s,^paired,runs/quick512_gpu/paired," paired

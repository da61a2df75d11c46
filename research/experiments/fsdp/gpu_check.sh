#!/usr/bin/env bash
# FSDP2 training on one GPU (accelerate launch --use_fsdp --fsdp_version 2 --num_processes 1), from the repository root:
#   bash research/experiments/fsdp/gpu_check.sh [OUT]
# 1. tests/test_grpo.py::test_fsdp2_matches_one_unsharded_process on the GPU (FSDP2 over nccl): a sharded run, killed
#    after one iteration and resumed, ends where an unsharded run ends;
# 2. one Flow-GRPO iteration of the SD3.5-M architecture (random weights, 512 px, bf16; the sd35m_iteration config),
#    without FSDP and then under FSDP2 with each JointTransformerBlock its own unit (TRANSFORMER_BASED_WRAP reads the
#    blocks from diffusers' _no_split_modules): seconds per phase and peak memory of each (results.jsonl);
# 3. `dgx run` of the quick shapes ablation under FSDP2, DenseGRPO only, cut to ITERS (default 4) iterations:
#    calibration, sharded training and evaluation end to end.
# Each stage has its own time limit (TEST_S, PLAIN_S, FSDP_S, RUN_S seconds). OVERRIDE (JSON, deep-merged into the
# SD3.5-M config) shrinks stage 2 for a CPU check of the script, e.g. OVERRIDE='{"model": {"name":
# "sd35m_random_2layers", "dtype": "float32", "resolution": 128, "max_sequence_length": 16}, "sampler": {"steps": 2},
# "train": {"group_size": 2, "micro_batch": 2}}' (on CPUs accelerate runs --use_fsdp as one plain process).
# One GPU shards nothing (a world of one); the check is that the FSDP2 code paths run on CUDA with nccl and give the
# unsharded results. On a machine without pytest, add its wheels to .whl/ (besides those listed in
# research/experiments/sd35m_iteration/gpu_check.sh; research/scripts/bare_machine_env.sh installs them), as in commit ebf5130:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
#     pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0
set -u
runs=runs/fsdp_gpu
out=${1:-$runs}
rm -rf "$runs"; mkdir -p "$runs" "$out"
source research/scripts/bare_machine_env.sh
fsdp=(python3 -m accelerate.commands.launch --use_fsdp --fsdp_version 2 --num_processes 1 --num_machines 1
      --mixed_precision no --dynamo_backend no --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP)

echo "== 1. FSDP2 against one unsharded process (tiny model, on the GPU)"
timeout "${TEST_S:-180}" python3 -m pytest -q -p no:cacheprovider tests/test_grpo.py -k "fsdp2 or refused" 2>&1 | tail -15
echo "test rc=${PIPESTATUS[0]}"

cfg=research/experiments/sd35m_iteration/sd35m_random.yaml
over=${OVERRIDE:-"{}"}
echo "== 2a. SD3.5-M architecture, Flow-GRPO, 1 iteration, one process without FSDP"
timeout "${PLAIN_S:-150}" python3 research/scripts/time_iteration.py "$cfg" --variant flow_grpo --iterations 1 --out "$runs/plain" --override "$over"
echo "plain rc=$?"
echo "== 2b. the same under FSDP2"
timeout "${FSDP_S:-170}" "${fsdp[@]}" research/scripts/time_iteration.py "$cfg" --variant flow_grpo --iterations 1 --out "$runs/fsdp" --override "$over"
echo "fsdp rc=$?"
cat "$runs/plain/results.jsonl" "$runs/fsdp/results.jsonl" > "$out/results.jsonl" 2>/dev/null

echo "== 3. dgx run configs/shapes_geneval.yaml under FSDP2, dense_grpo, ${ITERS:-4} iterations"
start=$(date +%s)
timeout "${RUN_S:-150}" "${fsdp[@]}" -m dgx.grpo.cli run configs/shapes_geneval.yaml --only dense_grpo --iterations "${ITERS:-4}" --out "$runs/shapes_quick"
echo "dgx run rc=$? wall_s=$(( $(date +%s) - start ))"
cp "$runs/shapes_quick/report.md" "$out/shapes_report.md" 2>/dev/null
cp "$runs/shapes_quick/dense_grpo/seed_0/metrics.jsonl" "$out/shapes_dense_metrics.jsonl" 2>/dev/null
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
exit 0

#!/usr/bin/env bash
# FSDP2 with CPU offload, and FLUX.1-dev under FSDP2 as shipped, on one GPU (commit 2ce5977), from the repository root:
#   bash research/experiments/fsdp/gpu_check_offload.sh [OUT]
# 1. tests/test_grpo.py::test_fsdp2_matches_one_unsharded_process on the GPU, shards on the GPU and offloaded to the
#    CPU (FSDP2 over cuda:nccl,cpu:gloo): a sharded run, killed after one iteration and resumed, ends where an
#    unsharded run ends, and the trained shards live where the mode puts them (commit 2ce5977: the offloaded run departed
#    after its first iteration; the test now marks that as an expected failure, see README.md);
# 2. one Flow-GRPO iteration of the SD3.5-M architecture (random weights, 512 px, bf16) under FSDP2 as shipped;
# 3. the same with --fsdp_offload_params true (experimental: DGX_EXPERIMENTAL_FSDP_OFFLOAD=1), 2 iterations (the
#    second row's gpu_peak_gib is training alone);
# 4. one Flow-GRPO iteration of FLUX.1-dev under FSDP2 as shipped (sharded from the CPU since commit ebf5130).
# Seconds per phase and peak GPU memory of each go to OUT/results.jsonl. Each stage has its own time limit (TEST_S,
# SD_S, OFFLOAD_S, FLUX_S seconds). SD_OVERRIDE and FLUX_OVERRIDE (JSON) shrink stages 2-4 for a CPU check of the
# script (see research/experiments/fsdp/gpu_check.sh and ../flux_iteration/gpu_check.sh for examples; on CPUs
# accelerate runs --use_fsdp as one plain process). Wheels the machine lacks: see gpu_check.sh.
set -u
runs=runs/fsdp_gpu_offload
out=${1:-$runs}
rm -rf "$runs"; mkdir -p "$runs" "$out"
source research/scripts/bare_machine_env.sh
fsdp=(python3 -m accelerate.commands.launch --config_file configs/accelerate/fsdp2.yaml --num_processes 1
      --mixed_precision no --dynamo_backend no)

echo "== 1. FSDP2 (shards on the GPU, and offloaded to the CPU) against one unsharded process (tiny model)"
timeout "${TEST_S:-150}" python3 -m pytest -q -p no:cacheprovider tests/test_grpo.py -k "fsdp2_matches" 2>&1 | tail -15
echo "test rc=${PIPESTATUS[0]}"

sd=research/experiments/sd35m_iteration/sd35m_random.yaml
flux=research/experiments/flux_iteration/flux_dev_random.yaml
sd_over=${SD_OVERRIDE:-"{}"}
flux_over=${FLUX_OVERRIDE:-"{}"}
echo "== 2. SD3.5-M architecture, Flow-GRPO, 1 iteration, FSDP2 as shipped"
timeout "${SD_S:-90}" "${fsdp[@]}" research/scripts/time_iteration.py "$sd" --variant flow_grpo --iterations 1 \
  --out "$runs/sd_fsdp" --override "$sd_over"
echo "sd fsdp rc=$?"
echo "== 3. the same with the parameters offloaded to the CPU, 2 iterations"
DGX_EXPERIMENTAL_FSDP_OFFLOAD=1 timeout "${OFFLOAD_S:-170}" "${fsdp[@]}" --fsdp_offload_params true research/scripts/time_iteration.py "$sd" --variant flow_grpo \
  --iterations 2 --out "$runs/sd_offload" --override "$sd_over"
echo "sd offload rc=$?"
echo "== 4. FLUX.1-dev architecture, Flow-GRPO, 1 iteration, FSDP2 as shipped"
timeout "${FLUX_S:-200}" "${fsdp[@]}" research/scripts/time_iteration.py "$flux" --variant flow_grpo --iterations 1 \
  --out "$runs/flux_fsdp" --override "$flux_over"
echo "flux fsdp rc=$?"
cat "$runs"/*/results.jsonl > "$out/results.jsonl" 2>/dev/null
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
exit 0

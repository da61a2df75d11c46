#!/usr/bin/env bash
# The paper-scale rehearsal on one GPU, from the repository root:
#   bash research/experiments/rehearsal/gpu_check.sh [OUT]
# `dgx rehearse --scale paper`: the stand-ins at their published sizes (SD3.5-M with CLIP-L, CLIP-G and T5-XXL in
# bf16, PickScore's CLIP-H, GenEval's Mask2Former Swin-S and CLIP-L/14; ~22 GB written once to runs/rehearsal_paper),
# then per config the base model's evaluation (8 images, 40 steps), two Flow-GRPO and two DenseGRPO iterations of one
# prompt group of 24 (DenseGRPO after a one-iteration calibration; the second iterations are timed) and their
# evaluations. PickScore runs first (its Dense/Flow time-over-calls ratio is the check), OCR second, GenEval last;
# the tables are rewritten after each config, so a run cut short by the time limit keeps what it measured. OUT receives rehearsal.md / rehearsal.json.
# Expected on one H100/H200 (from the SD3.5-M iteration times in ../sd35m_iteration: Flow-GRPO 35 s, DenseGRPO 67 s
# per iteration): about 4-5 min per config, so 540 s covers PickScore and most of OCR.
# A bare machine with PyTorch needs, besides ../sd35m_iteration/gpu_check.sh's wheels, those of rapidocr,
# onnxruntime, Levenshtein, rapidfuzz, shapely, pyclipper, omegaconf, opencv-python-headless in .whl/.
set -u
runs=runs/rehearsal_paper
out=${1:-${OUT:-$runs}}
mkdir -p "$runs" "$out"
source research/scripts/bare_machine_env.sh
start=$(date +%s)
timeout "${REHEARSAL_LIMIT:-540}" python3 -m dgx.grpo.cli rehearse configs/sd35m_pickscore.yaml configs/sd35m_ocr.yaml \
  configs/sd35m_geneval.yaml --scale paper --out "$runs"
echo "rehearsal rc=$? wall_s=$(( $(date +%s) - start ))"
cp "$runs/rehearsal.md" "$runs/rehearsal.json" "$out"/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.used --format=csv

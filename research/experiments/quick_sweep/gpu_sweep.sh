#!/usr/bin/env bash
# The quick ablation's recipe (40 iterations of 4 prompts x 8 samples, configs/shapes_geneval.yaml) with one setting changed
# at a time, three training seeds each (0, 1, 2; SEEDS="3 4" for others), on a GPU: many short runs side by side, each trained and scored on the quick
# protocol (sweep.py: its eval seed is 12345 + training seed), plus the base model on the same three eval seeds, so
# analyze.py can pair every run with the base image by image.
#   bash research/experiments/quick_sweep/gpu_sweep.sh SPECS [SECONDS] [OUT]    # SECONDS: deadline for the whole sweep
# SPECS: a file of lines NAME VARIANT JSON (round1.specs, round2.specs); JSON is deep-merged into the variant, SEED in it
# becomes the training seed.
# Runs are started in order (all specs for seed 0, then seed 1, then seed 2), WORKERS at a time; a run that would
# start after the deadline is skipped, and one still going at the deadline is killed (analyze.py ignores it).
# OUT (default runs/quick_sweep_gpu) receives sweep.log and qsweep.tgz (run folders without checkpoints or TensorBoard,
# and the base model's per-image records). SMOKE=1 cuts every run to 1 iteration and a tiny evaluation (a CPU check).
set -u
specs_file=$1
secs=${2:-420}
out=${3:-runs/quick_sweep_gpu}
runs=runs/qsweep
workers=${WORKERS:-8}
seeds=${SEEDS:-0 1 2}
mkdir -p "$out" "$runs"
source research/scripts/bare_machine_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
cfg=configs/shapes_geneval.yaml
deadline=$(( $(date +%s) + secs ))
extra='{}'
base_sets=()
if [ "${SMOKE:-0}" = 1 ]; then
  extra='{"train": {"iterations": 1}, "eval": {"max_prompts": 6, "images_per_prompt": 1, "min_images_per_tag": 1}}'
  base_sets=(--set eval.max_prompts=6 --images 1 --min-per-tag 1)
fi

specs=()
for seed in $seeds; do  # all configs for seed 0 first: a sweep cut short by the deadline still has whole seeds
  while read -r name variant json; do
    [ -z "$name" ] || [ "${name:0:1}" = "#" ] || specs+=("${name}_s$seed $variant ${json//SEED/$seed}")
  done < "$specs_file"
done

run_one() {  # NAME VARIANT JSON: train and score one run unless the deadline has passed
  local name=$1 variant=$2 json=$3 left
  left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt 20 ]; then echo "skip $name (deadline)"; return; fi
  local merged=$json
  [ "$extra" = '{}' ] || merged=$(python3 -c 'import json,sys; from dgx.grpo.config import deep_merge
print(json.dumps(deep_merge(json.loads(sys.argv[1]), json.loads(sys.argv[2]))))' "$json" "$extra")
  local start=$(date +%s)
  timeout "$left" python3 research/scripts/sweep.py "$cfg" --variant "$variant" --out "$runs" "$name=$merged" > "$runs/$name.log" 2>&1
  echo "$name rc=$? ${variant} $(( $(date +%s) - start )) s"
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
start=$(date +%s)
python3 research/scripts/paired_eval.py "$cfg" --variant dense_grpo --seeds $(for s in $seeds; do echo $(( 12345 + s )); done) --out "$runs/paired" "${base_sets[@]}" \
  > "$out/base.jsonl" 2> "$runs/base.log" &
{
  for spec in "${specs[@]}"; do
    read -r name variant json <<< "$spec"
    run_one "$name" "$variant" "$json" &
    while [ "$(jobs -rp | wc -l)" -ge "$workers" ]; do wait -n; done
  done
  wait
} 2>&1 | tee "$out/sweep.log"
wait
echo "sweep done in $(( $(date +%s) - start )) s" | tee -a "$out/sweep.log"
cp "$runs/results.jsonl" "$out/results.jsonl" 2>/dev/null
tar czf "$out/qsweep.tgz" --exclude=checkpoints --exclude=tensorboard "$runs"
ls -la "$out"

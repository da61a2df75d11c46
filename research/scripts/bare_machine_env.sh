# Sourced by the GPU scripts (research/experiments/*/gpu_*.sh), from the repository root: makes dgx importable on
# a machine with PyTorch but without dgx installed. Wheels in .whl/ (what the machine lacks; see
# research/experiments/sd35m_iteration/gpu_check.sh for the list used on an H200) go to /tmp/site; then, if
# dgx is not installed, its four packages' sources go on PYTHONPATH. Offline Hub, unbuffered output; prints the GPU
# and the library versions.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
python3 -c "import dgx.grpo" 2>/dev/null || export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(printf '%s:' packages/*/src)"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 -c "import torch, diffusers, transformers, peft, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"

#!/usr/bin/env bash
# One-command setup: .venv with the four dgx packages (editable) and the dev tools.
# Where no torch is installed it takes torch==2.13.0 (a CPU build on this project's
# machines); on a GPU machine install your CUDA build of torch>=2.4 first.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! python -c "import torch" 2>/dev/null; then
  pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
fi
pip install -q -e packages/sampler -e packages/rewards -e packages/eval -e "packages/grpo[dev]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import dgx.grpo, torch; print('dgx ready (torch', torch.__version__ + ')')"

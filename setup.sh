#!/usr/bin/env bash
# One-command setup: .venv with the four dgx packages (editable) and the dev tools, in 4 steps.
# A torch that the interpreter ($PYTHON, default python3) already imports (your CUDA build) is kept: .venv sees the
# folder it is installed in (scripts/keep_torch.sh). Where there is none it takes torch==2.13.0 (a CPU build on this
# project's machines). Needs Python >= 3.10.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
step() { printf '[%s/4] %s\n' "$1" "$2"; }
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "error: dgx needs Python >= 3.10 ($PY is $("$PY" -V 2>&1))"; exit 1; }
step 1 "virtual environment .venv (from $("$PY" -V 2>&1))"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
scripts/keep_torch.sh "$PY" .venv/bin/python
. .venv/bin/activate
step 2 "pip"
pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if python -c "import torch" 2>/dev/null; then
  step 3 "torch $(python -c 'import torch; print(torch.__version__)') (already installed: kept)"
else
  step 3 "torch==2.13.0 (none installed; a few minutes)"
  pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
fi
step 4 "the dgx packages and their dependencies (diffusers, transformers, peft, ...; a minute or two)"
pip install -q -e packages/sampler -e packages/rewards -e packages/eval -e "packages/grpo[dev]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import dgx.grpo, torch; print('dgx ready (torch', torch.__version__ + ')')"

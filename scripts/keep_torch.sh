#!/usr/bin/env bash
# keep_torch.sh PYTHON VENV_PYTHON: if PYTHON imports a torch that VENV_PYTHON does not, put the folder that torch is
# installed in on VENV_PYTHON's path (a .pth file, after the venv's own packages), so that the venv uses it and pip
# counts it as installed. setup.sh calls it to keep a CUDA build of torch.
set -euo pipefail
PY=$1 VENV=$2
"$VENV" -c "import torch" 2>/dev/null && exit 0
SITE=$("$PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null) || exit 0
PURELIB=$("$VENV" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$SITE" > "$PURELIB/dgx_existing_torch.pth"
echo "keeping the torch of $PY ($SITE)"

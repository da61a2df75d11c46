"""setup.sh keeps a torch the user's interpreter already has (a CUDA build) instead of installing a CPU one: tested
with a stand-in torch package, as scripts/keep_torch.sh sees it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def venv(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    return folder / "bin" / "python"


def purelib(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def run(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_an_installed_torch_is_kept_and_counted_as_installed(tmp_path):
    users = venv(tmp_path / "users")  # the interpreter setup.sh is given, with "its CUDA torch"
    site = purelib(users)
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text('__version__ = "2.99.0+cu999"\n')
    (site / "torch-2.99.0.dist-info").mkdir()
    (site / "torch-2.99.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.99.0\n")
    fresh = venv(tmp_path / "dot_venv")  # setup.sh's .venv
    keep = [str(ROOT / "scripts" / "keep_torch.sh"), str(users), str(fresh)]
    out = subprocess.run(keep, capture_output=True, text=True, check=True).stdout
    assert f"keeping the torch of {users}" in out
    assert run(fresh, "import torch; print(torch.__version__)") == "2.99.0+cu999"
    assert run(fresh, "import importlib.metadata as m; print(m.version('torch'))") == "2.99.0"  # pip sees it
    assert subprocess.run(keep, capture_output=True, text=True, check=True).stdout == ""  # already visible: nothing

    none = venv(tmp_path / "no_torch")  # an interpreter without torch: setup.sh installs one
    assert subprocess.run([keep[0], str(none), str(venv(tmp_path / "other"))], capture_output=True).returncode == 0
    assert not list(purelib(tmp_path / "other" / "bin" / "python").glob("*.pth"))

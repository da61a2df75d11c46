"""The paper's prompt sets (`dgx data`), fetched from Flow-GRPO's repository at a pinned commit and cached.

A config names a set as ``data://NAME`` (``prompts: {name: file, path: data://pickscore_train}``); ``dgx validate``
says which sets are not fetched yet, and a run fetches them on first use. Each file is checked before it enters the
cache: against its pinned sha256, or, for the GenEval and OCR training files (whose contents no snapshot here holds),
against the git blob id the pinned commit's tree gives them (sha1 of ``blob <size>\0`` + the bytes). A download goes
to a temporary file that is renamed into place only when whole and checked: an interrupted one leaves nothing
behind.

The cache is ``$DGX_DATA`` (default ``~/.cache/dgx/data``); ``$DGX_DATA_URL`` replaces the download base (a mirror);
``HF_HUB_OFFLINE=1`` forbids downloads.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dgx.grpo.errors import ConfigError
from dgx.grpo.folders import digest

REPOSITORY = "yifan123/flow_grpo"
COMMIT = "ac4c86e8cae021841f1fde853d340e0db67690dd"
SCHEME = "data://"


@dataclass(frozen=True)
class DataFile:
    """One file of Flow-GRPO's repository: its path there and its pin, a sha256 or the git blob id of the commit's
    tree."""

    path: str
    sha256: str | None = None
    git_blob: str | None = None

    def matches(self, path: Path) -> bool:
        """Whether the file at ``path`` is this one."""
        if self.sha256 is not None:
            return digest(path) == self.sha256
        return git_blob_id(path) == self.git_blob


SETS = {
    "pickscore_train": DataFile(
        "dataset/pickscore/train.txt", "2f425adcbb9a6d0feee7c6c448e1cb83a1f71deca9434b803907e2578eca837f"
    ),
    "pickscore_test": DataFile(
        "dataset/pickscore/test.txt", "d75c025fa451866e70f7e36243f7cdd93095523cb51f5f9651f2ce3236d20262"
    ),
    "geneval_train": DataFile(
        "dataset/geneval/train_metadata.jsonl", git_blob="0b97e8a6802c08fc7537cd00c76ae79c851bddcb"
    ),
    "geneval_test": DataFile(
        "dataset/geneval/test_metadata.jsonl", "cec4b24b9fee7bac21c8f787054ecc8dc9ff831674037713a4cd35e0f0a74a28"
    ),
    "ocr_train": DataFile("dataset/ocr/train.txt", git_blob="3ce0521b77b0a9031191d66ecc36ebaaf27a3922"),
    "ocr_test": DataFile("dataset/ocr/test.txt", "4dd8caf3ab6ade73bd376c7d14c6ca49b6eacfb1bd321e22c40714ae4a98d4dc"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("DGX_DATA") or Path.home() / ".cache" / "dgx" / "data")


def data_file(name: str) -> DataFile:
    """The set ``name``; a ConfigError naming the known ones otherwise."""
    if name not in SETS:
        raise ConfigError(f"unknown data set {name!r} (known: {', '.join(SETS)})")
    return SETS[name]


def url(name: str) -> str:
    base = os.environ.get("DGX_DATA_URL") or f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}"
    return f"{base.rstrip('/')}/{data_file(name).path}"


def local(name: str) -> Path:
    """Where set ``name`` is cached (whether or not it is there)."""
    return cache_dir() / name / Path(data_file(name).path).name


def git_blob_id(path: Path) -> str:
    """git's object id of the file's bytes (``git hash-object``)."""
    return digest(path, hashlib.sha1(f"blob {path.stat().st_size}\0".encode()))


def cached(name: str) -> Path | None:
    """The cached file of set ``name`` when it is there and is the pinned one; None otherwise."""
    path = local(name)
    return path if path.is_file() and data_file(name).matches(path) else None


def fetch(name: str, progress: bool = True) -> Path:
    """Set ``name``'s file, downloading it into the cache when it is not there; a ConfigError in one line when it
    cannot be had (offline, a network failure, a hash that does not match: nothing is cached then)."""
    if (path := cached(name)) is not None:
        return path
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(f"data set {name!r} is not fetched and HF_HUB_OFFLINE=1: run `dgx data {name}` online first")
    path, pin = local(name), data_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        download(url(name), tmp, progress)
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        why = getattr(e, "reason", None) or e
        raise ConfigError(f"data set {name!r}: download from {url(name)} failed ({why})") from None
    if not pin.matches(tmp):
        tmp.unlink()
        kind, want = ("sha256", pin.sha256) if pin.sha256 else ("git blob id", pin.git_blob)
        raise ConfigError(f"data set {name!r}: the download is not the pinned file (its {kind} is not {want[:12]}...)")
    os.replace(tmp, path)
    return path


def download(address: str, to: Path, progress: bool) -> None:
    """Stream ``address`` into ``to``. A response shorter than its Content-Length is an error."""
    from tqdm.auto import tqdm

    with urllib.request.urlopen(address, timeout=60) as response, open(to, "wb") as out:
        size = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=size, unit="B", unit_scale=True, desc=to.name.split(".part")[0][1:], disable=not progress
        ) as bar:
            got = 0
            while block := response.read(1 << 16):
                out.write(block)
                got += len(block)
                bar.update(len(block))
    if size is not None and got != size:
        raise ValueError(f"connection cut after {got} of {size} bytes")


def resolve(path: str) -> str:
    """``data://NAME`` -> the local file of set NAME (fetched on first use); any other path unchanged."""
    return str(fetch(path[len(SCHEME) :])) if path.startswith(SCHEME) else path

"""Output folders: writable before any work, held by one command at a time, and their files read with what to do
when one is damaged.

A command that writes a folder (``dgx run --out``, ``dgx calibrate --out``, ``dgx eval --out``) holds an exclusive
``fcntl`` lock on ``FOLDER/.dgx.lock`` while it runs. The operating system releases the lock when the process ends,
however it ends, so a lock file left by a killed command is taken over with a warning naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from dgx.grpo.errors import ConfigError

LOCK = ".dgx.lock"


def writable_folder(path: Path, what: str) -> Path:
    """Create folder ``path`` and check that files can be written in it, before any work; a ConfigError otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".dgx_write_check_{os.getpid()}"  # one per process under accelerate launch
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot write there ({e.strerror or e})") from None
    return path


def holder(text: str) -> str:
    """Who a lock file's text names: ``dgx run (pid 12, host h, since 2026-12-06T03:00:00+00:00)``."""
    try:
        who = json.loads(text)
        return f"{who['command']} (pid {who['pid']}, host {who['host']}, since {who['since']})"
    except (json.JSONDecodeError, KeyError, TypeError):
        return "another dgx command"


@contextmanager
def held(folder: Path, command: str, enabled: bool = True) -> Iterator[None]:
    """Hold ``folder`` for ``command`` (e.g. ``dgx run``) while the block runs: a ConfigError at once if another
    process holds it; a lock left by a process that was killed is taken over, with a warning. ``enabled`` False
    (the other processes of an ``accelerate launch``, whose main process holds it) does nothing."""
    if not enabled or sys.platform == "win32":
        yield
        return
    import fcntl

    path = Path(folder) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{folder} is in use by {holder(path.read_text())}; wait for it to end or give another --out"
            ) from None
        if left := os.read(fd, 4096).decode(errors="replace").strip():
            warnings.warn(
                f"{folder}: taking over the lock of {holder(left)}, which ended without releasing it", stacklevel=3
            )
        me = {"command": command, "pid": os.getpid(), "host": socket.gethostname()}
        me["since"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released cleanly: an empty file is no one's lock
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def digest(path: Path, h=None) -> str:
    """The hex digest of the file at ``path`` through the hashlib object ``h`` (default sha256), read a megabyte at a
    time."""
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path, damaged: str) -> dict | None:
    """The JSON object in ``path``; None if there is none. A damaged file (a truncated write) is a warning naming it
    and ``damaged``, what happens instead (e.g. "the evaluation is redone"), and None."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    if isinstance(value, dict):
        return value
    warnings.warn(f"{path} is damaged (not a whole JSON object): {damaged}", stacklevel=2)
    return None


def jsonl_rows(path: Path) -> list[dict]:
    """The rows of JSONL file ``path`` up to its last whole line (a run killed while writing one leaves it half);
    rows after a damaged line are dropped with a warning, and the file is rewritten by the caller."""
    rows = []
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            warnings.warn(f"{path}: line {n} is damaged; keeping the {len(rows)} rows before it", stacklevel=2)
            break
        rows.append(row)
    return rows

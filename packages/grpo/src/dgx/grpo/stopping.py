"""Stopping a command cleanly on SIGINT or SIGTERM.

``dgx`` commands turn both signals into ``Stopped`` (a ``KeyboardInterrupt``), raised where the process is, so
that the runner can say where it stopped and how to resume. Work that must not be cut in two (a checkpoint being
written) runs inside ``signals_wait()``: a signal that arrives meanwhile takes effect when it ends. Signal handlers
belong to the process, so this module holds the one piece of process state dgx keeps: the signals waiting.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Stopped(KeyboardInterrupt):
    """The process was asked to stop (``signal``: SIGINT or SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.where = ""  # filled in by the command that was stopped: where it stopped and how to go on

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}" + (f" {self.where}" if self.where else "")


class _Waiting:
    """Nesting depth of ``signals_wait`` and the signals received inside it."""

    depth = 0
    received: list[int] = []


def _handler(signum: int, frame) -> None:
    if _Waiting.depth:
        _Waiting.received.append(signum)
        return
    raise Stopped(signum)


def stop_on_signals() -> None:
    """SIGINT and SIGTERM raise ``Stopped`` in the main thread (a no-op elsewhere: only it may set handlers)."""
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, _handler)


@contextmanager
def signals_wait() -> Iterator[None]:
    """Run the block whole: a SIGINT or SIGTERM received inside it raises ``Stopped`` when it ends (an error inside
    it goes first)."""
    _Waiting.depth += 1
    try:
        yield
    finally:
        _Waiting.depth -= 1
    if not _Waiting.depth and _Waiting.received:
        signum, _Waiting.received = _Waiting.received[0], []
        raise Stopped(signum)


def exit_code(stop: Stopped) -> int:
    """The shell's code for a process ended by the signal: 128 + its number."""
    return 128 + stop.signum

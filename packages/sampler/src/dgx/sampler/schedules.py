"""Noise schedules: the diffusion coefficient sigma_t of each SDE step on a timestep grid.

A schedule is called with the step indices and the grid (``grid[0] = 1 > ... > grid[T] = 0``)
and returns sigma for each step ``grid[i] -> grid[i+1]``:

- ``UniformNoise(a)``: Flow-GRPO's ``sigma_t = a * sqrt(t / (1 - t))``; at t = 1 the
  denominator uses the second grid value (``1 - grid[1]``), as Flow-GRPO does.
- ``ConstantNoise(value)``: ``sigma_t = value`` everywhere.
- ``TableNoise(psi)``: DenseGRPO's calibrated per-timestep ``sigma_t = psi[i]``, read from
  the ``psi.json`` that ``dgx calibrate`` writes.
- ``Windowed(inner, start, stop)``: ``inner``'s sigma on steps ``start <= i < stop`` and 0
  (a deterministic ODE step) elsewhere, as Flow-GRPO-Fast and MixGRPO do: only the window's
  steps explore and are trained, and the rest of every rollout is the ODE the test uses. With
  ``shift`` the window slides through the steps as training goes on (MixGRPO); ``schedule_at``
  gives a training iteration's schedule.

For the CPS step the value is used as its noise level eta (see ``steps.cps_step``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol, Sequence

import numpy as np
import torch
from annotated_types import Ge
from dgx.sampler.errors import SamplerError


class NoiseSchedule(Protocol):
    def __call__(self, index: torch.Tensor, grid: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class UniformNoise:
    a: Annotated[float, Ge(0)] = 0.7

    def __call__(self, index: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        t = grid[index].float()
        denom_t = torch.where(t >= 1.0, grid[1].float(), t)  # t = 1 guard
        return self.a * torch.sqrt(t / (1 - denom_t))


@dataclass(frozen=True)
class ConstantNoise:
    value: Annotated[float, Ge(0)] = 0.7

    def __call__(self, index: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return torch.full(torch.as_tensor(index).shape, self.value, dtype=torch.float32, device=grid.device)


@dataclass(frozen=True)
class TableNoise:
    psi: tuple[float, ...]

    def __call__(self, index: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        if len(self.psi) != len(grid) - 1:
            raise SamplerError(
                f"psi table has {len(self.psi)} entries but the sampler has {len(grid) - 1} steps; "
                "re-run `dgx calibrate` with the same sampler.steps"
            )
        return torch.tensor(self.psi, dtype=torch.float32, device=grid.device)[index]

    @classmethod
    def from_json(cls, psi_path: str | Path) -> "TableNoise":
        """Read ``{"psi": [...], "timesteps": [...], ...}`` as written by calibration."""
        path = Path(psi_path)
        if not path.is_file():
            raise SamplerError(f"psi table {path} not found; run `dgx calibrate CONFIG` first or fix noise.psi_path")
        data = json.loads(path.read_text())
        if "psi" not in data:
            raise SamplerError(f"{path} has no 'psi' list")
        return cls(tuple(float(p) for p in data["psi"]))

    def to_json(self, path: str | Path, grid: Sequence[float], **extra) -> None:
        Path(path).write_text(
            json.dumps({"psi": list(self.psi), "timesteps": [float(t) for t in grid], **extra}, indent=2)
        )


@dataclass(frozen=True)
class Windowed:
    """``inner``'s sigma on steps [start, stop), 0 elsewhere; with ``shift`` a sliding window (MixGRPO's progressive
    strategy): ``at(iteration, steps)`` is the window of a training iteration."""

    inner: NoiseSchedule
    start: int
    stop: int
    shift: int = 0
    every: int = 1
    roll_back: bool = True
    draw: tuple[int, int] | None = None

    def at(self, iteration: int, steps: int, seed: int = 0) -> Windowed:
        """The fixed window of training iteration ``iteration`` (0-based) on ``steps`` steps: moved by ``shift`` after
        every ``every`` iterations, one that would pass the end starting over at ``start`` (``roll_back``) or staying
        at the last whole window; with ``draw = (lo, hi)`` starting at a step drawn uniformly from lo..hi - size,
        keyed by (seed, iteration) (Flow-GRPO-Fast)."""
        size = self.stop - self.start
        if self.draw is not None:
            lo, hi = self.draw
            start = int(np.random.default_rng([seed, iteration, 1]).integers(lo, hi - size + 1))
            return Windowed(self.inner, start, start + size)
        if not self.shift:
            return self
        moves = iteration // self.every
        last = steps - size  # the last start whose window lies within the steps
        if self.roll_back:
            start = self.start + self.shift * (moves % ((last - self.start) // self.shift + 1))
        else:
            start = min(self.start + self.shift * moves, last)
        return Windowed(self.inner, start, start + size)

    def __call__(self, index: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        if not 0 <= self.start < self.stop <= len(grid) - 1:
            raise SamplerError(
                f"noise window [{self.start}, {self.stop}) must lie within the {len(grid) - 1} sampler steps"
            )
        index = torch.as_tensor(index)
        inside = (index >= self.start) & (index < self.stop)
        return torch.where(inside.to(grid.device), self.inner(index, grid), 0.0)


def schedule_at(schedule: NoiseSchedule | None, iteration: int, steps: int, seed: int = 0) -> NoiseSchedule | None:
    """The noise schedule of training iteration ``iteration`` of a run of ``seed``: a moving window's place then, else
    ``schedule``."""
    return schedule.at(iteration, steps, seed) if isinstance(schedule, Windowed) else schedule


def psi_stand_in(folder: Path) -> dict:
    """An offline stand-in of the calibrated schedule (``dgx.grpo.contracts``): a psi table of 6 steps in ``folder``."""
    path = Path(folder) / "psi.json"
    TableNoise((0.9, 0.8, 0.6, 0.4, 0.2, 0.0)).to_json(path, [1.0, 0.8, 0.6, 0.4, 0.2, 0.001, 0.0])
    return {"args": {"psi_path": str(path)}}

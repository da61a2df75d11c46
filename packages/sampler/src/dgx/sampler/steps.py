"""One denoising step on the flow-matching grid: SDE, ODE and CPS, with exact log-probs.

Time runs from t = 1 (noise) to 0 (data); ``dt = t_next - t < 0``. Each step is a pure
function of tensors and returns a ``StepOutput``. If ``x_next`` is given it is scored
instead of sampled (what training needs). Means and log-probs are computed in float32.

Log-prob convention (used everywhere in dgx): the Gaussian log-density of ``x_next``
under ``N(mean, std^2 I)``, averaged over all non-batch dimensions (Flow-GRPO's
reduction; it keeps ratios and KL independent of the latent size). Shape ``(B,)``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Time = torch.Tensor | float  # a time (or noise level) on the grid: one for the batch, or one per sample (B,)
Generators = torch.Generator | list[torch.Generator] | None  # one for the batch, or one per sample


@dataclass
class StepOutput:
    sample: torch.Tensor  # x_next, float32
    log_prob: torch.Tensor  # (B,), mean over non-batch dims; 0 for deterministic steps
    mean: torch.Tensor  # float32
    std: torch.Tensor  # (B,) float32, the step's std
    level: torch.Tensor  # (B,) float32, the noise level Flow-GRPO's step returns (its ``std_dev_t``): sigma_t for
    # the SDE (std = sigma_t * sqrt(|dt|)), the std itself for CPS, 0 for the ODE; Flow-GRPO's KL divides by it


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float32, device=x.device)
    return v.reshape(-1, *([1] * (x.ndim - 1))) if v.ndim else v


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2) per element, averaged over non-batch dims -> (B,).

    Args:
        x: The sampled (or recorded) latents, (B, ...).
        mean: The step's mean, the shape of ``x``.
        std: The step's standard deviation, a scalar or one per sample.
    """
    std = _bcast(std, mean)
    lp = -((x.float() - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return lp.flatten(1).mean(1)


def _per_sample(v, mean: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float32, device=mean.device).expand(mean.shape[0]).clone()


def _finish(mean, std, x_next, generator, level=None) -> StepOutput:
    std = _per_sample(std, mean)
    if x_next is None:
        # a list of generators draws each sample's noise from its own generator
        from diffusers.utils.torch_utils import randn_tensor  # imported when sampling: `dgx validate` needs none

        noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
        x_next = mean + _bcast(std, mean) * noise
    deterministic = bool((std == 0).all())
    lp = torch.zeros(mean.shape[0], device=mean.device) if deterministic else gaussian_log_prob(x_next, mean, std)
    return StepOutput(x_next.float(), lp, mean, std, std.clone() if level is None else _per_sample(level, mean))


def ode_step(
    x: torch.Tensor,
    v: torch.Tensor,
    t: Time,
    t_next: Time,
    sigma: Time | None = None,
    generator: Generators = None,
    x_next: torch.Tensor | None = None,
) -> StepOutput:
    """Euler: x_next = x + v * dt (a point mass: log_prob 0, std 0).

    Args:
        x: The latents at time ``t``, (B, ...).
        v: The model's velocity at ``x`` and ``t`` (with guidance applied).
        t: The current time, a scalar or one per sample (1 is noise, 0 is data).
        t_next: The time after the step (< ``t``).
        sigma: The noise level at this step (the schedule's psi(t)); unused: the step is deterministic.
        generator: A torch.Generator, or one per sample, for the noise (None: the global one).
        x_next: Latents to score instead of sampling (training recomputes the log-prob of recorded steps).
    """
    x, v = x.float(), v.float()
    mean = x + v * (_bcast(t_next, x) - _bcast(t, x))
    zero = torch.zeros(x.shape[0], device=x.device)
    return StepOutput(mean, zero, mean, zero, zero)


def heun(x: torch.Tensor, v: torch.Tensor, v_next: torch.Tensor, t: Time, t_next: Time) -> torch.Tensor:
    """Heun's second-order ODE step: x_next = x + (v + v_next) / 2 * dt, where ``v_next`` is the velocity at the Euler
    point x + v dt and t_next (diffusers' ``FlowMatchHeunDiscreteScheduler``, whose last step, to t = 0, is Euler).

    Args:
        x: The latents at time ``t``.
        v: The velocity at ``x`` and ``t``.
        v_next: The velocity at the Euler point and ``t_next``.
        t: The current time.
        t_next: The time after the step.
    """
    return x.float() + (v.float() + v_next.float()) / 2 * (_bcast(t_next, x) - _bcast(t, x))


def sde_step(
    x: torch.Tensor,
    v: torch.Tensor,
    t: Time,
    t_next: Time,
    sigma: Time,
    generator: Generators = None,
    x_next: torch.Tensor | None = None,
) -> StepOutput:
    """Flow-GRPO SDE step with the same marginals as the ODE:

    mean   = x + [v + sigma^2 / (2 t) * (x + (1 - t) v)] * dt
    x_next = mean + sigma * sqrt(|dt|) * eps

    Args:
        x: The latents at time ``t``, (B, ...).
        v: The model's velocity at ``x`` and ``t`` (with guidance applied).
        t: The current time, a scalar or one per sample (1 is noise, 0 is data).
        t_next: The time after the step (< ``t``).
        sigma: The noise level at this step (the schedule's psi(t)); its std is sigma * sqrt(|dt|).
        generator: A torch.Generator, or one per sample, for the noise (None: the global one).
        x_next: Latents to score instead of sampling (training recomputes the log-prob of recorded steps).
    """
    x, v = x.float(), v.float()
    tb, dt, s = _bcast(t, x), _bcast(t_next, x) - _bcast(t, x), _bcast(sigma, x)
    mean = x + (v + s**2 / (2 * tb) * (x + (1 - tb) * v)) * dt
    std = torch.as_tensor(sigma, dtype=torch.float32, device=x.device) * torch.sqrt(
        -(
            torch.as_tensor(t_next, dtype=torch.float32, device=x.device)
            - torch.as_tensor(t, dtype=torch.float32, device=x.device)
        )
    )
    return _finish(mean, std, x_next, generator, level=sigma)


def cps_step(
    x: torch.Tensor,
    v: torch.Tensor,
    t: Time,
    t_next: Time,
    sigma: Time,
    generator: Generators = None,
    x_next: torch.Tensor | None = None,
) -> StepOutput:
    """Coefficients-preserving sampling (Wang & Yu 2025, Flow-GRPO's ``cps``), eta = ``sigma``:

    x0 = x - t v,  eps = x + (1 - t) v,  std = t_next * sin(eta * pi / 2)
    mean = (1 - t_next) x0 + sqrt(t_next^2 - std^2) eps

    Args:
        x: The latents at time ``t``, (B, ...).
        v: The model's velocity at ``x`` and ``t`` (with guidance applied).
        t: The current time, a scalar or one per sample (1 is noise, 0 is data).
        t_next: The time after the step (< ``t``).
        sigma: The noise level at this step (the schedule's psi(t)): eta, its std is t_next * sin(eta * pi / 2).
        generator: A torch.Generator, or one per sample, for the noise (None: the global one).
        x_next: Latents to score instead of sampling (training recomputes the log-prob of recorded steps).
    """
    x, v = x.float(), v.float()
    tb, tn = _bcast(t, x), _bcast(t_next, x)
    std = torch.as_tensor(t_next, dtype=torch.float32, device=x.device) * torch.sin(
        torch.as_tensor(sigma, dtype=torch.float32, device=x.device) * math.pi / 2
    )
    x0, eps = x - tb * v, x + (1 - tb) * v
    mean = (1 - tn) * x0 + torch.sqrt(torch.clamp(tn**2 - _bcast(std, x) ** 2, min=0)) * eps
    return _finish(mean, std, x_next, generator)


def takes_noise(step: Callable[..., StepOutput]) -> bool:
    """Whether a step function draws noise: its ``sigma`` is required (a deterministic step, like ``ode_step``,
    defaults it to None). Training and calibration need such a step; a run's ``sampler.noise`` is only read by one.

    Args:
        step: A step function with the signature of ``sde_step``.
    """
    p = inspect.signature(step).parameters.get("sigma")
    return p is not None and p.default is inspect.Parameter.empty

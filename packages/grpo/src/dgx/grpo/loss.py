"""The objectives on a batch of recorded (sample, step) pairs (docs/method.md, section 4).

    ratio  = exp(log pi_theta(x_next | x_t) - log pi_old(x_next | x_t))
    policy = mean( max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)) )   (= -J's PPO term)
    kl     = mean( ||mean_theta - mean_ref||^2 / (2 s^2) )                  (mean over latent dims)
    loss   = policy + beta * kl

The KL divisor ``s`` names the form (the objective's ``kl``):
- ``flow_grpo`` (default): s = sigma_t, the step's noise level before its sqrt(|dt|) factor (Flow-GRPO's
  ``std_dev_t``). For the SDE this is the Gaussian step's KL times |dt|; the papers' beta is in these units.
- ``exact``: s = sigma_t * sqrt(|dt|), the step's own std: the exact KL between the two Gaussian steps,
  1/|dt| times the first (4x-25x on a 10-step grid), so the same beta regularises harder.

``FlowGRPO`` is this loss (with ``ratio: guard``, GRPO-Guard's normalised ratio); ``FlowDPPO`` drops the clip for a
trust region on the exact KL between the policy's step and the rollout's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

import torch
from annotated_types import Ge, Gt
from dgx.grpo.advantages import EPS, advantages

if TYPE_CHECKING:
    from dgx.sampler.steps import StepOutput


@dataclass
class LossOutput:
    loss: torch.Tensor
    policy: torch.Tensor
    kl: torch.Tensor
    clip_frac: torch.Tensor
    approx_kl: torch.Tensor  # 0.5 * mean((log_prob - old_log_prob)^2), a drift diagnostic


def grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    adv: torch.Tensor,
    mean: torch.Tensor,
    ref_mean: torch.Tensor | None,
    kl_std: torch.Tensor,
    clip_range: float,
    kl_beta: float,
) -> LossOutput:
    """Flow-GRPO's clipped GRPO loss with a KL penalty, over P (sample, step) pairs.

    Args:
        log_prob: (P,) log-probs of the recorded steps under the current policy.
        old_log_prob: (P,) log-probs the rollout recorded.
        adv: (P,) advantages.
        mean: (P, ...) the policy's step means, float32.
        ref_mean: (P, ...) the reference policy's step means (None: no KL).
        kl_std: (P,) the KL's divisor ``s``: the step's ``level`` or ``std``, by the KL form.
        clip_range: Epsilon of the ratio's clip.
        kl_beta: The KL's weight beta.
    """
    return clipped_loss(log_prob - old_log_prob, adv, mean, ref_mean, kl_std, clip_range, kl_beta)


def clipped_loss(
    log_ratio: torch.Tensor,
    adv: torch.Tensor,
    mean: torch.Tensor,
    ref_mean: torch.Tensor | None,
    kl_std: torch.Tensor,
    clip_range: float,
    kl_beta: float,
) -> LossOutput:
    """The clipped-ratio loss of ``grpo_loss`` for a given log-ratio (Flow-GRPO's, or GRPO-Guard's).

    Args:
        log_ratio: (P,) log of the ratio pi_theta / pi_old.
        adv: (P,) advantages.
        mean: (P, ...) the policy's step means, float32.
        ref_mean: (P, ...) the reference policy's step means (None: no KL).
        kl_std: (P,) the KL's divisor.
        clip_range: Epsilon of the ratio's clip.
        kl_beta: The KL's weight beta.
    """
    ratio = torch.exp(log_ratio)
    policy = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_range, 1 + clip_range)).mean()
    if ref_mean is not None and kl_beta > 0:
        kl = step_kl(mean, ref_mean, kl_std).mean()
    else:
        kl = torch.zeros((), device=log_ratio.device)
    return LossOutput(
        policy + kl_beta * kl,
        policy.detach(),
        kl.detach(),
        ((ratio - 1).abs() > clip_range).float().mean().detach(),
        (0.5 * log_ratio**2).mean().detach(),
    )


@dataclass(frozen=True)
class Recorded:
    """What the rollout recorded of a step under the policy that drew it: its log-density and its mean."""

    log_prob: torch.Tensor  # (P,)
    mean: torch.Tensor  # (P, ...) float32


def guard_log_ratio(out: StepOutput, old: Recorded) -> torch.Tensor:
    """GRPO-Guard's log-ratio: (log pi_theta - log pi_old) * s + mean(|mean_theta - mean_old|^2) / (2 s), s the step's
    std. For Gaussian steps of one std this is mean(eps * (mean_theta - mean_old)), eps = (x_next - mean_old) / s: the
    1/s scale of the plain log-ratio and its negative bias -mean(|dmean|^2) / (2 s^2) are gone.

    Args:
        out: The sampler step's output under the current policy.
        old: What the rollout recorded of the same steps.
    """
    s = out.std
    mse = ((out.mean - old.mean) ** 2).flatten(1).mean(1)
    return (out.log_prob - old.log_prob) * s + mse / (2 * s)


def step_kl(mean: torch.Tensor, other: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(P,) KL between two Gaussian steps of means ``mean`` and ``other`` and divisor ``s`` (mean over latent dims):
    |mean - other|^2 / (2 s^2)."""
    return ((mean - other) ** 2).flatten(1).mean(1) / (2 * s**2)


@dataclass(frozen=True)
class GroupObjective:
    """What the objectives share: group-normalised advantages and an optional KL to the reference policy.

    ``kl_beta``: beta, in the units of ``kl`` (``flow_grpo``: divided by 2 sigma_t^2, Flow-GRPO's and the papers';
    ``exact``: by 2 sigma_t^2 |dt|, the Gaussian steps' exact KL). ``guidance_grad``: with CFG, ``cond``
    back-propagates through the conditional branch only (Flow-GRPO), ``full`` through both. ``adv_std``,
    ``adv_ddof``, ``adv_clip_max``: the advantages' std (global, group or batch; dgx.grpo.advantages), its degrees of
    freedom and their clip."""

    kl_beta: Annotated[float, Ge(0)] = 0.01
    kl: Literal["flow_grpo", "exact"] = "flow_grpo"
    guidance_grad: Literal["cond", "full"] = "cond"
    adv_std: Literal["global", "group", "batch"] = "global"
    adv_ddof: Literal[0, 1] = 0
    adv_clip_max: Annotated[float, Gt(0)] = 5.0

    @property
    def needs_reference(self) -> bool:
        """Whether the loss reads the reference policy's step means (the adapter disabled)."""
        return self.kl_beta > 0

    @property
    def detach_uncond(self) -> bool:
        """Whether the unconditional CFG branch is detached in the policy's forward pass."""
        return self.guidance_grad == "cond"

    def advantages(
        self,
        signal: torch.Tensor,
        weights: torch.Tensor,
        per_step: bool,
        group_size: int,
        parts: list[tuple[torch.Tensor, float]] | None = None,
    ) -> torch.Tensor:
        """(N, T) advantages of the gathered credit; with ``parts`` each reward is normalised on its own, GDPO's
        decoupled normalisation.

        Args:
            signal: (N, T) the credit rule's per-step signal (every step the same for a sparse rule).
            weights: (N, T) the credit rule's per-step weights.
            per_step: Whether the signal differs per step (dense credit): normalised per step, else per trajectory.
            group_size: Samples per prompt; groups are consecutive rows.
            parts: Each kept reward's (N, T) signal and its weight, or None.
        """
        std, ddof, clip = self.adv_std, self.adv_ddof, self.adv_clip_max
        if not parts:
            return advantages(signal, weights, per_step, group_size, clip, std, ddof)
        ones = torch.ones_like(signal)  # each reward normalised alone, unclipped; the weighted sum standardised
        total = sum(w * advantages(x, ones, per_step, group_size, float("inf"), std, ddof) for x, w in parts)
        total = (total - total.mean(0)) / (total.std(0, correction=ddof) + EPS)
        return (total * weights).clamp(-clip, clip)

    def kl_divisor(self, out: StepOutput) -> torch.Tensor:
        """The divisor ``s`` of the KL to the reference, by ``kl``: the step's noise level or its std.

        Args:
            out: The sampler step's output.
        """
        return out.level if self.kl == "flow_grpo" else out.std

    def reference_kl(self, out: StepOutput, ref_mean: torch.Tensor | None) -> torch.Tensor:
        """The mean KL of the policy's steps to the reference's (0 without one).

        Args:
            out: The sampler step's output under the current policy.
            ref_mean: The reference policy's step means, or None.
        """
        if ref_mean is None or self.kl_beta == 0:
            return torch.zeros((), device=out.log_prob.device)
        return step_kl(out.mean, ref_mean, self.kl_divisor(out)).mean()


@dataclass(frozen=True)
class FlowGRPO(GroupObjective):
    """Flow-GRPO's objective: the clipped ratio with a KL to the reference policy (``GroupObjective``).

    ``clip_range``: epsilon of the ratio's clip (Flow-GRPO: 1e-4). ``ratio``: ``flow_grpo``, exp of the log-density
    difference; ``guard``, GRPO-Guard's normalised ratio (``guard_log_ratio``)."""

    clip_range: Annotated[float, Gt(0)] = 1e-4
    ratio: Literal["flow_grpo", "guard"] = "flow_grpo"

    def __call__(self, out: StepOutput, old: Recorded, adv: torch.Tensor, ref_mean: torch.Tensor | None) -> LossOutput:
        """The loss of a batch of steps: ``out`` is the sampler step's output under the current policy (its
        ``log_prob``, ``mean``, ``level`` and ``std``), ``old`` what the rollout recorded, ``ref_mean`` the
        reference's step means (None without KL)."""
        kl_std, eps, beta = self.kl_divisor(out), self.clip_range, self.kl_beta
        if self.ratio == "guard":
            return clipped_loss(guard_log_ratio(out, old), adv, out.mean, ref_mean, kl_std, eps, beta)
        return grpo_loss(out.log_prob, old.log_prob, adv, out.mean, ref_mean, kl_std, eps, beta)


@dataclass(frozen=True)
class FlowDPPO(GroupObjective):
    """Flow-DPPO: no ratio clip; a step's gradient is dropped when its exact Gaussian KL to the rollout policy,
    |mean_theta - mean_old|^2 / (2 s^2), reaches ``kl_threshold`` and the update would widen the gap (ratio > 1 with
    A > 0, or ratio < 1 with A < 0). ``trust_kl``: the divisor s, ``exact`` (the step's std, sigma_t sqrt(|dt|)) or
    ``flow_grpo`` (sigma_t). The KL to the reference (``kl_beta``) is off by default: the trust region replaces it."""

    kl_beta: Annotated[float, Ge(0)] = 0.0
    kl_threshold: Annotated[float, Gt(0)] = 1e-5
    trust_kl: Literal["exact", "flow_grpo"] = "exact"

    def __call__(self, out: StepOutput, old: Recorded, adv: torch.Tensor, ref_mean: torch.Tensor | None) -> LossOutput:
        """The masked policy-gradient loss (arguments as ``FlowGRPO``); ``clip_frac`` reports the masked share."""
        log_ratio = out.log_prob - old.log_prob
        ratio = torch.exp(log_ratio)
        trust = step_kl(out.mean, old.mean, out.std if self.trust_kl == "exact" else out.level).detach()
        widens = ((ratio > 1) & (adv > 0)) | ((ratio < 1) & (adv < 0))
        keep = ~((trust >= self.kl_threshold) & widens)
        policy = torch.where(keep, -adv * ratio, torch.zeros_like(ratio)).mean()  # where: a dropped inf stays out
        kl = self.reference_kl(out, ref_mean)
        return LossOutput(
            policy + self.kl_beta * kl,
            policy.detach(),
            kl.detach(),
            (~keep).float().mean().detach(),
            (0.5 * log_ratio**2).mean().detach(),
        )

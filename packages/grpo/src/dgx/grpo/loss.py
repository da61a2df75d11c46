"""The GRPO objective on a batch of recorded (sample, step) pairs (docs/method.md, section 4).

    ratio  = exp(log pi_theta(x_next | x_t) - log pi_old(x_next | x_t))
    policy = mean( max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)) )   (= -J's PPO term)
    kl     = mean( ||mean_theta - mean_ref||^2 / (2 s^2) )                  (mean over latent dims)
    loss   = policy + beta * kl

The KL divisor ``s`` names the form (``train.kl``):
- ``flow_grpo`` (default): s = sigma_t, the step's noise level before its sqrt(|dt|) factor (Flow-GRPO's
  ``std_dev_t``). For the SDE this is the Gaussian step's KL times |dt|; the papers' beta is in these units.
- ``exact``: s = sigma_t * sqrt(|dt|), the step's own std: the exact KL between the two Gaussian steps,
  1/|dt| times the first (4x-25x on a 10-step grid), so the same beta regularises harder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
    """All per-pair tensors are (P,); ``mean``/``ref_mean`` are (P, ...) step means in float32; ``kl_std`` (P,)
    is the KL's divisor ``s`` (the step's ``level`` or ``std``, by the KL form)."""
    ratio = torch.exp(log_prob - old_log_prob)
    policy = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_range, 1 + clip_range)).mean()
    if ref_mean is not None and kl_beta > 0:
        kl = ((mean - ref_mean) ** 2).flatten(1).mean(1) / (2 * kl_std**2)
        kl = kl.mean()
    else:
        kl = torch.zeros((), device=log_prob.device)
    return LossOutput(
        policy + kl_beta * kl,
        policy.detach(),
        kl.detach(),
        ((ratio - 1).abs() > clip_range).float().mean().detach(),
        (0.5 * (log_prob - old_log_prob) ** 2).mean().detach(),
    )

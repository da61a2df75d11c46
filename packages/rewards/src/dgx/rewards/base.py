"""The reward interface: images + prompts + per-prompt metadata -> one float per image.

Images are float tensors in [0, 1], NCHW (the convention of dgx.sampler). A reward is a
callable ``reward(images, prompts, metadata) -> Tensor[N]`` with a ``name``; heavy models
load lazily on first call, from a Hub id or a local folder.
"""

from __future__ import annotations

from typing import Literal, Protocol, Sequence

import numpy as np
import torch


class RewardError(ValueError):
    """A reward cannot be computed (missing weights offline, bad prompt); says what to do."""


class Reward(Protocol):
    name: str

    def __call__(
        self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None
    ) -> torch.Tensor: ...


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[0, 1] NCHW tensor -> uint8 NHWC array."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def load_error(model_id: str, what: str, cause: Exception) -> RewardError:
    """One line saying which model could not load, why (the cause's text on one line) and what to do offline."""
    why = " ".join(str(cause).split())
    return RewardError(
        f"could not load {what} from {model_id!r} ({type(cause).__name__}: {why}). Offline, download it once "
        f"elsewhere (huggingface-cli download {model_id}) and set the reward's path to that local folder."
    )


def checked(scores, n: int, name: str, prompts: Sequence[str] = ()) -> torch.Tensor:
    """``scores`` if it is what a reward must return for ``n`` images, a floating-point tensor of shape (n,) with
    finite values; else a RewardError that names the reward (a (1,) output would broadcast over the batch and train
    nothing, a NaN would pass for a tie)."""
    if not isinstance(scores, torch.Tensor):
        raise RewardError(f"reward {name!r} returned a {type(scores).__name__}, not a tensor of {n} scores")
    if not scores.is_floating_point():
        raise RewardError(f"reward {name!r} returned {scores.dtype} scores; a reward returns floats")
    if tuple(scores.shape) != (n,):
        raise RewardError(f"reward {name!r} returned shape {tuple(scores.shape)} for {n} images; expected ({n},)")
    bad = ~torch.isfinite(scores)
    if bad.any():
        which = [prompts[i] for i in torch.nonzero(bad).flatten().tolist()[:3]] if len(prompts) == n else []
        raise RewardError(
            f"reward {name!r} returned {int(bad.sum())} non-finite scores of {n}"
            + (f", e.g. for {which}" if which else "")
        )
    return scores


class LazyModel:
    """A component whose model loads on its first use (``_load`` sets ``self.model``); ``load()`` loads it now."""

    model = None

    def _load(self) -> None:
        raise NotImplementedError

    def load(self) -> None:
        if self.model is None:
            self._load()


def load_now(component) -> None:
    """Load a reward's models now rather than on its first call, so that a wrong path or a missing package fails
    before any sampling (components without ``load()`` have nothing to load)."""
    load = getattr(component, "load", None)
    if callable(load):
        load()


class CheckedReward:
    """A reward whose every output passes ``checked`` (its errors call it ``label``, e.g. its registry name); its
    ``name`` and other attributes are the wrapped reward's."""

    def __init__(self, reward: Reward, label: str | None = None):
        self.reward = reward
        self.name = getattr(reward, "name", type(reward).__name__)
        self.label = label or self.name

    def __call__(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None):
        return checked(self.reward(images, prompts, metadata), len(images), self.label, prompts)

    def parts(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None):
        """The wrapped reward's ``parts``, each checked as a reward's output."""
        out = self.reward.parts(images, prompts, metadata)
        return {n: checked(v, len(images), f"{self.label}.{n}", prompts) for n, v in out.items()}

    def __getattr__(self, key: str):
        return getattr(self.reward, key)


class WeightedReward:
    """sum_k w_k * reward_k(images, prompts, metadata): ``rewards`` maps a label to a reward (in a config, a reward
    node: a registry name or ``{name: ..., its arguments}``) and ``weights`` the same labels to their weights.

    ``normalize``: ``sum`` trains on the weighted sum, normalised as one reward; ``per_reward`` (GDPO's decoupled
    normalisation) gives the credit each reward's own scores (``parts``), which the objective normalises within each
    prompt group separately before the weighted sum, so that a reward of small spread is not drowned by one of large
    spread. Either way the call returns the weighted sum, and the trainer logs each reward's mean."""

    def __init__(
        self, rewards: dict[str, Reward], weights: dict[str, float], normalize: Literal["sum", "per_reward"] = "sum"
    ):
        if set(rewards) != set(weights):
            raise ValueError(
                f"weighted: rewards {sorted(rewards)} and weights {sorted(weights)} must name the same labels"
            )
        self.rewards, self.weights, self.normalize = rewards, weights, normalize
        self.name = "+".join(f"{w:g}*{n}" for n, w in weights.items())

    def parts(self, images, prompts, metadata=None) -> dict[str, torch.Tensor]:
        """Each reward's own scores of the images, by label."""
        return {n: self.rewards[n](images, prompts, metadata).float() for n in self.weights}

    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        parts = self.parts(images, prompts, metadata)
        return sum(w * parts[n] for n, w in self.weights.items())

    def load(self) -> None:
        for reward in self.rewards.values():
            load_now(reward)


def reward_parts(reward) -> dict[str, float] | None:
    """The weights of a reward whose parts the credit keeps apart (a ``weighted`` reward with ``per_reward``
    normalisation), by label; None for any other reward."""
    if getattr(reward, "normalize", None) != "per_reward" or not callable(getattr(reward, "parts", None)):
        return None
    return dict(reward.weights)

"""The reward interface: images + prompts + per-prompt metadata -> one float per image.

Images are float tensors in [0, 1], NCHW (the convention of dgx.sampler); a video model's samples are videos
(N, frames, 3, H, W), which a reward scores frame by frame (``frame_wise``). A reward is a
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
    """[0, 1] NCHW tensor -> uint8 NHWC array; videos (N, F, 3, H, W) -> each one's scored frames (``frame_wise``)
    side by side, (N, H, k W, 3)."""
    if images.ndim == 5:
        idx = scored_frames(images.shape[1])
        images = torch.cat(list(images[:, idx].unbind(1)), dim=-1)
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


# a video's score is the mean of its frames' scores over at most this many frames, evenly spaced from first to last
FRAMES_SCORED = 8


def scored_frames(frames: int) -> torch.Tensor:
    """The frames of a video of ``frames`` that a reward scores: ``FRAMES_SCORED`` evenly spaced from the first to the
    last, or every one of a shorter video."""
    return torch.linspace(0, frames - 1, min(frames, FRAMES_SCORED)).round().long()


def frame_wise(score, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None):
    """``score(images, prompts, metadata)`` of images (N, 3, H, W); of videos (N, F, 3, H, W), the mean of the scores
    of ``FRAMES_SCORED`` frames evenly spaced from the first to the last (every frame of a shorter video), each frame
    scored as an image with its video's prompt and metadata. A ``score`` returning a dict (a reward's ``parts``) is
    averaged entry by entry."""
    if images.ndim != 5:
        return score(images, prompts, metadata)
    n, idx = images.shape[0], scored_frames(images.shape[1])
    k = len(idx)

    def each(items):
        return None if items is None else [x for x in items for _ in range(k)]

    out = score(images[:, idx].flatten(0, 1), each(list(prompts)), each(metadata))
    if isinstance(out, dict):
        return {name: v.view(n, k).mean(1) for name, v in out.items()}
    return out.view(n, k).mean(1)


class CheckedReward:
    """A reward whose every output passes ``checked`` (its errors call it ``label``, e.g. its registry name); its
    ``name`` and other attributes are the wrapped reward's."""

    def __init__(self, reward: Reward, label: str | None = None):
        self.reward = reward
        self.name = getattr(reward, "name", type(reward).__name__)
        self.label = label or self.name

    def __call__(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None):
        """The reward's scores of ``images`` (of videos: ``frame_wise``), checked."""

        def score(images, prompts, metadata):
            return checked(self.reward(images, prompts, metadata), len(images), self.label, prompts)

        return frame_wise(score, images, prompts, metadata)

    def parts(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None):
        """The wrapped reward's ``parts``, each checked as a reward's output."""

        def score(images, prompts, metadata):
            out = self.reward.parts(images, prompts, metadata)
            return {n: checked(v, len(images), f"{self.label}.{n}", prompts) for n, v in out.items()}

        return frame_wise(score, images, prompts, metadata)

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

"""A reward scored by a reward server (``dgx serve-reward``, or any server speaking ``dgx.rewards.wire``): heavy or
conflicting reward stacks run in their own environment, on another GPU or machine."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt
from dgx.rewards.base import RewardError
from dgx.rewards.wire import TOKEN_ENV, encode


class RemoteReward:
    """The reward served at ``url``. ``form``: the images' encoding, ``safetensors`` (float32, lossless) or ``png``
    (8 bits, for rewards that quantise first). Each request waits ``timeout`` seconds; a lost connection, a timeout
    or a 5xx is retried ``retries`` times, ``backoff`` x 2^k seconds apart, and then is one RewardError. A 4xx is the
    server's refusal and is not retried. The bearer token comes from ``$DGX_REWARD_TOKEN``, never from the config."""

    def __init__(
        self,
        url: str,
        form: Literal["safetensors", "png"] = "safetensors",
        timeout: Annotated[float, Gt(0)] = 120.0,
        retries: Annotated[int, Ge(0)] = 3,
        backoff: Annotated[float, Ge(0)] = 1.0,
        name: str | None = None,
    ):
        self.url, self.form, self.timeout, self.retries, self.backoff = url.rstrip("/"), form, timeout, retries, backoff
        self.name = name or "remote"
        self._named = name is not None

    def _request(self, method: str, path: str, body: bytes | None = None, kind: str | None = None):
        token = os.environ.get(TOKEN_ENV)
        headers = {
            **({"Authorization": f"Bearer {token}"} if token else {}),
            **({"Content-Type": kind} if kind else {}),
        }
        return http_json(method, self.url + path, headers, body, self.timeout, self.retries, self.backoff)

    def load(self) -> None:
        """Ask the server's health endpoint now (a wrong URL fails before any sampling) and take its reward's name."""
        health = self._request("GET", "/health")
        if not self._named:
            self.name = str(health.get("reward", self.name))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None):
        kind, body = encode(images, prompts, metadata, self.form)
        scores = self._request("POST", "/score", body, kind)
        scores = scores.get("scores") if isinstance(scores, dict) else None
        if not isinstance(scores, list) or len(scores) != len(images):
            raise RewardError(f"reward server {self.url} answered without {len(images)} scores")
        return torch.tensor(scores, dtype=torch.float32)


def http_json(method: str, url: str, headers: dict, body, timeout: float, retries: int, backoff: float):
    """The JSON answer of one HTTP request (``body``: bytes, or an object sent as JSON). A lost connection, a timeout
    or a 5xx is retried ``retries`` times, ``backoff`` x 2^k seconds apart, then is one RewardError; a 4xx is the
    server's refusal, not retried."""
    import httpx

    content = {"json": body} if isinstance(body, (dict, list)) else {"content": body}
    why = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            reply = httpx.request(method, url, headers=headers, timeout=timeout, **content)
        except httpx.HTTPError as e:
            why = f"{type(e).__name__}: {e}"
            continue
        if reply.status_code >= 500:
            why = f"HTTP {reply.status_code}: {reply.text[:200]}"
            continue
        if reply.status_code >= 400:
            raise RewardError(f"{url} refused the request (HTTP {reply.status_code}): {_error(reply)}")
        try:
            return reply.json()
        except ValueError:
            raise RewardError(f"{url} answered with no JSON: {reply.text[:200]!r}") from None
    raise RewardError(f"{url} did not answer after {retries + 1} tries ({why})")


def _error(reply) -> str:
    try:
        return str(reply.json().get("error", reply.text))
    except ValueError:
        return reply.text[:200]

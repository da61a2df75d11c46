"""A vision-language model as judge: each image and a question about it go to an OpenAI-compatible chat-completions
server (vLLM, SGLang, ... serving UnifiedReward, Qwen2.5-VL), and the number in the answer is the score.

The rule: the score is the first number in the reply that follows the word "score" (any case), else the first number
in the reply; it must lie in [``low``, ``high``]. A reply with no such number is an error that quotes the reply, never
a silent 0.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import torch
from annotated_types import Ge, Gt
from dgx.rewards.base import RewardError, to_uint8
from dgx.rewards.remote import http_json
from dgx.rewards.wire import png_base64

TEMPLATE = (
    'You are judging an image generated for the prompt: "{prompt}". Rate how well the image matches the prompt and '
    "how good it looks, from 1 (worst) to 10 (best). Answer with 'Score: N' and nothing else."
)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
AFTER_SCORE = re.compile(r"score\D*?(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_score(reply: str, low: float, high: float) -> float:
    """The score in a judge's ``reply`` by the module's rule; a RewardError quoting the reply when there is none."""
    found = AFTER_SCORE.search(reply) or NUMBER.search(reply)
    if found is None:
        raise RewardError(f"the judge's reply has no score: {reply[:200]!r}")
    value = float(found.group(1) if found.re is AFTER_SCORE else found.group(0))
    if not low <= value <= high:
        raise RewardError(f"the judge's score {value:g} is outside [{low:g}, {high:g}] in its reply {reply[:200]!r}")
    return value


class VLMJudge:
    """Scores each image by asking ``model`` at the chat-completions server ``url`` (``.../v1``) the ``template``
    question (``{prompt}``: the image's prompt), greedy (temperature 0), ``workers`` requests at a time. The API key,
    if the server needs one, is read from the environment variable named by ``api_key_env``, never from the config."""

    name = "vlm_judge"

    def __init__(
        self,
        url: str,
        model: str,
        template: str = TEMPLATE,
        low: float = 1.0,
        high: float = 10.0,
        max_tokens: Annotated[int, Gt(0)] = 16,
        workers: Annotated[int, Gt(0)] = 8,
        timeout: Annotated[float, Gt(0)] = 120.0,
        retries: Annotated[int, Ge(0)] = 3,
        api_key_env: str = "OPENAI_API_KEY",
    ):
        if "{prompt}" not in template:
            raise ValueError("vlm_judge: the template must contain {prompt}")
        self.url, self.model, self.template = url.rstrip("/"), model, template
        self.low, self.high, self.max_tokens, self.workers = low, high, max_tokens, workers
        self.timeout, self.retries, self.api_key_env = timeout, retries, api_key_env

    def _ask(self, pixels, prompt: str) -> float:
        image = "data:image/png;base64," + png_base64(pixels)
        body = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image}},
                        {"type": "text", "text": self.template.format(prompt=prompt)},
                    ],
                }
            ],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
        key = os.environ.get(self.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        answer = http_json("POST", f"{self.url}/chat/completions", headers, body, self.timeout, self.retries, 1.0)
        try:
            reply = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise RewardError(f"{self.url}: not a chat-completions answer: {str(answer)[:200]}") from None
        return parse_score(str(reply), self.low, self.high)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None):
        pixels = to_uint8(images)
        with ThreadPoolExecutor(self.workers) as pool:
            scores = list(pool.map(self._ask, pixels, prompts))
        return torch.tensor(scores, dtype=torch.float32)

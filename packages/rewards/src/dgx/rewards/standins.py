"""Offline stand-ins of the rewards that load models: tiny models of the same classes, random weights, written into a
folder, and the node arguments that load them (``dgx.grpo.contracts``: each registry entry names its ``stand_in``).
They exercise the real loading and scoring code; their scores mean nothing. Each returns ``{"args": node arguments}``,
with ``"metadata"`` where the reward needs prompts of its own."""

from __future__ import annotations

from pathlib import Path

import torch

# a few COCO classes and colour words: the tiny tokenizers' vocabulary and the GenEval stand-in's labels
LABELS = ["cat", "dog", "car", "person"]
WORDS = ["a", "photo", "of", "two", "red", "blue", "and", "sign", "that", "says", "hello", *LABELS]
OCR_METADATA = [{"prompt": f'a sign that says "{w}"'} for w in ("hello", "dgx", "flow", "grpo", "dense", "reward")]
GENEVAL_METADATA = [
    {"tag": "single_object", "prompt": f"a photo of a {c}", "include": [{"class": c, "count": 1}], "exclude": []}
    for c in LABELS
] + [
    {"tag": "counting", "prompt": "a photo of two cats", "include": [{"class": "cat", "count": 2}], "exclude": []},
    {
        "tag": "colors",
        "prompt": "a photo of a red car",
        "include": [{"class": "car", "count": 1, "color": "red"}],
        "exclude": [],
    },
]


def _clip(folder: Path) -> str:
    from dgx.rewards.architectures import save_clip

    return str(save_clip(folder / "clip", WORDS))


def clip_reward(folder: Path) -> dict:
    """A CLIP-based reward (PickScore, CLIPScore): a tiny CLIP and its processor."""
    path = _clip(folder)
    return {"args": {"path": path, "processor_path": path}}


def aesthetic(folder: Path) -> dict:
    """The aesthetic predictor: a tiny CLIP and a head of its projection width, random weights."""
    from dgx.rewards.aesthetic import AestheticHead
    from safetensors.torch import save_file
    from transformers import CLIPConfig

    path = _clip(folder)
    torch.manual_seed(0)
    head = AestheticHead(CLIPConfig.from_pretrained(path).projection_dim)
    save_file(head.state_dict(), folder / "head.safetensors")
    return {"args": {"path": path, "head_path": str(folder / "head.safetensors")}}


def geneval(folder: Path) -> dict:
    """GenEval on real images: a tiny Mask2Former over a few COCO classes and a tiny CLIP for the colours."""
    from dgx.rewards.architectures import save_mask2former

    detector = save_mask2former(folder / "mask2former", LABELS)
    return {"args": {"path": str(detector), "processor_path": _clip(folder)}, "metadata": GENEVAL_METADATA}


def ocr(folder: Path) -> dict:
    """OCR needs no download (rapidocr ships its models); its prompts must quote a text."""
    return {"args": {}, "metadata": OCR_METADATA}


def weighted(folder: Path) -> dict:
    """A weighted sum of two rewards that need no download."""
    return {
        "args": {
            "rewards": {"ink": "ink", "rules": {"name": "geneval_shapes", "partial": True}},
            "weights": {"ink": 2.0, "rules": 0.5},
        }
    }


def remote(folder: Path) -> dict:
    """A reward server in this process, hosting the shapes world's ``ink``, on a free local port."""
    from dgx.rewards.ink import Ink
    from dgx.rewards.server import Background, app

    return {"args": {"url": Background(app(Ink())).url}}


def judge_app():
    """A chat-completions server standing in for a VLM judge: its reply to an image is ``Score: N``, N from 1 to 10
    by the image's mean brightness (deterministic, so a split batch scores the same)."""
    import base64
    import io

    import numpy as np
    from PIL import Image
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        content = (await request.json())["messages"][0]["content"]
        url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
        reply = f"Score: {1 + 9 * pixels.mean() / 255:.3f}"
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": reply}}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def vlm_judge(folder: Path) -> dict:
    """The judge stand-in server in this process, on a free local port."""
    from dgx.rewards.server import Background

    return {"args": {"url": Background(judge_app()).url + "/v1", "model": "stand-in"}}


def hps(folder: Path) -> dict:
    """HPSv2: a tiny CLIP's config and processor, and its weights as an HPS-style open_clip checkpoint."""
    from dgx.rewards.hps import clip_to_open_clip
    from transformers import CLIPModel

    path = _clip(folder)
    model = CLIPModel.from_pretrained(path)
    layers = (model.config.text_config.num_hidden_layers, model.config.vision_config.num_hidden_layers)
    torch.save({"state_dict": clip_to_open_clip(model.state_dict(), *layers)}, folder / "hps.pt")
    return {"args": {"path": str(folder / "hps.pt"), "processor_path": path}}

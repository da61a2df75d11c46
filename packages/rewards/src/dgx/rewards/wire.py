"""The reward server's wire format (docs/guide/rewards.md states it for servers in any language). No pickle: a
request can make neither side run code.

``POST /score`` takes one batch, in one of two bodies:

- ``application/vnd.dgx.safetensors`` (the default, lossless for every reward): a safetensors file whose one tensor
  ``images`` is float32 (N, 3, H, W) in [0, 1], and whose header metadata holds ``prompts`` (a JSON list of N
  strings) and ``metadata`` (a JSON list of N objects, or ``null``);
- ``application/json`` (for rewards that quantise to 8 bits first, as the CLIP-based ones do): ``{"images_png":
  [base64 PNG, ...], "prompts": [...], "metadata": [...] | null}``; each PNG is RGB, 8 bits per channel.

The answer is ``{"scores": [N floats]}`` (JSON numbers, exact for float32 values), or a 4xx with ``{"error": "..."}``.
``GET /health`` answers ``{"status": "ok", "reward": NAME}``. With a token set (``DGX_REWARD_TOKEN``) every request
carries ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence

import numpy as np
import torch

SAFETENSORS = "application/vnd.dgx.safetensors"
JSON = "application/json"
TOKEN_ENV = "DGX_REWARD_TOKEN"


class WireError(ValueError):
    """A malformed request body: the message says what is wrong."""


def encode(images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None, form: str = "safetensors"):
    """A batch as (content type, body bytes)."""
    if form == "png":
        from dgx.rewards.base import to_uint8

        pngs = [png_base64(pixels) for pixels in to_uint8(images)]
        body = {"images_png": pngs, "prompts": list(prompts), "metadata": None if metadata is None else list(metadata)}
        return JSON, json.dumps(body).encode()
    from safetensors.torch import save

    header = {
        "prompts": json.dumps(list(prompts)),
        "metadata": json.dumps(None if metadata is None else list(metadata)),
    }
    return SAFETENSORS, save({"images": images.detach().float().cpu().contiguous()}, metadata=header)


def png_base64(pixels: np.ndarray) -> str:
    """A uint8 HWC RGB image as base64 PNG text."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode(content_type: str, body: bytes) -> tuple[torch.Tensor, list[str], list[dict] | None]:
    """A request body as (images float32 NCHW, prompts, metadata); a WireError says what is malformed."""
    kind = (content_type or "").split(";")[0].strip()
    if kind == SAFETENSORS:
        images, header = _safetensors(body)
        prompts, metadata = _json_field(header, "prompts"), _json_field(header, "metadata")
    elif kind == JSON:
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WireError(f"body is not JSON ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("images_png"), list):
            raise WireError("a JSON body needs 'images_png': a list of base64 PNGs")
        images = _pngs(data["images_png"])
        prompts, metadata = data.get("prompts"), data.get("metadata")
    else:
        raise WireError(f"content type {kind or 'none'!r}: send {SAFETENSORS} or {JSON}")
    _check(images, prompts, metadata)
    return images, prompts, metadata


def _safetensors(body: bytes) -> tuple[torch.Tensor, dict]:
    from safetensors.torch import load

    try:
        tensors = load(body)
        header = json.loads(body[8 : 8 + int.from_bytes(body[:8], "little")]).get("__metadata__") or {}
    except Exception as e:  # noqa: BLE001  (safetensors raises several kinds on a damaged body)
        raise WireError(f"body is not a safetensors file ({type(e).__name__}: {e})") from None
    if set(tensors) != {"images"}:
        raise WireError(f"the safetensors body must hold one tensor 'images', got {sorted(tensors)}")
    if tensors["images"].dtype != torch.float32:
        raise WireError(f"images must be float32, got {tensors['images'].dtype}")
    return tensors["images"], header


def _json_field(header: dict, key: str):
    if key not in header:
        raise WireError(f"the safetensors metadata has no {key!r}")
    try:
        return json.loads(header[key])
    except json.JSONDecodeError as e:
        raise WireError(f"metadata {key!r} is not JSON ({e})") from None


def _pngs(items: list) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for i, item in enumerate(items):
        try:
            image = Image.open(io.BytesIO(base64.b64decode(item, validate=True)))
            arrays.append(np.asarray(image.convert("RGB")))
        except (ValueError, TypeError, UnidentifiedImageError, OSError) as e:
            raise WireError(f"images_png[{i}] is not a base64 PNG ({e})") from None
    if len({a.shape for a in arrays}) > 1:
        raise WireError("images_png: the images must share one size")
    stacked = np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), np.uint8)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255


def _check(images: torch.Tensor, prompts, metadata) -> None:
    n = images.shape[0]
    if images.ndim != 4 or images.shape[1] != 3 or n == 0:
        raise WireError(f"images must be (N >= 1, 3, H, W), got {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()) or images.min() < 0 or images.max() > 1:
        raise WireError("images must be finite values in [0, 1]")
    if not isinstance(prompts, list) or len(prompts) != n or not all(isinstance(p, str) for p in prompts):
        raise WireError(f"prompts must be a list of {n} strings")
    if metadata is not None and (
        not isinstance(metadata, list) or len(metadata) != n or not all(isinstance(m, dict) for m in metadata)
    ):
        raise WireError(f"metadata must be null or a list of {n} objects")

"""CLIP's image preprocessing on tensors, on the images' own device: what ``CLIPImageProcessor`` does (resize the
shortest edge, centre crop, rescale, normalise), without a round trip through PIL per image.

It mirrors the processor's uint8 steps (the image quantised to 0-255 before and after resizing) and its bicubic
resampling with antialiasing; tests/test_rewards.py bounds the difference from the processor's own output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = {2: "bilinear", 3: "bicubic"}  # PIL's resample codes -> torch's interpolation modes


def _quantise(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round() / 255


def _size(h: int, w: int, size: dict) -> tuple[int, int]:
    if "shortest_edge" in size:
        short, long = (h, w) if h <= w else (w, h)
        s = size["shortest_edge"]
        new_long = int(s * long / short)
        return (s, new_long) if h <= w else (new_long, s)
    return size["height"], size["width"]


def clip_pixels(images: torch.Tensor, processor) -> torch.Tensor:
    """``images`` (float [0, 1], NCHW, any device) -> CLIP ``pixel_values`` as ``processor`` (a CLIPImageProcessor,
    or a processor holding one) would make them, on the same device."""
    ip = getattr(processor, "image_processor", processor)
    x = _quantise(images.float())
    h, w = x.shape[-2:]
    if getattr(ip, "do_resize", True):
        size = _size(h, w, dict(ip.size))
        if size != (h, w):
            mode = MODES.get(int(getattr(ip, "resample", 3)), "bicubic")
            x = _quantise(F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False))
    if getattr(ip, "do_center_crop", True):
        ch, cw = ip.crop_size["height"], ip.crop_size["width"]
        top, left = max(0, (x.shape[-2] - ch) // 2), max(0, (x.shape[-1] - cw) // 2)
        x = x[..., top : top + ch, left : left + cw]
    if getattr(ip, "do_normalize", True):
        mean = torch.tensor(ip.image_mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(ip.image_std, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x


def open_clip_pixels(images: torch.Tensor, processor) -> torch.Tensor:
    """open_clip's evaluation transform as HPS's own scoring applies it to 8-bit images (``ToTensor``, then
    torchvision's tensor ``Resize`` of the shortest side to the crop size, bicubic with antialiasing and no rounding,
    ``CenterCrop`` and ``Normalize`` with the processor's mean and std), on the images' own device."""
    ip = getattr(processor, "image_processor", processor)
    side = ip.crop_size["height"]
    x = _quantise(images.float())
    h, w = x.shape[-2:]
    size = (side, int(side * w / h)) if h <= w else (int(side * h / w), side)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    top, left = int(round((x.shape[-2] - side) / 2.0)), int(round((x.shape[-1] - side) / 2.0))
    x = x[..., top : top + side, left : left + side]
    mean = torch.tensor(ip.image_mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(ip.image_std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


PREPROCESS = ("tensor", "processor", "open_clip")


def clip_inputs(images: torch.Tensor, processor, device: torch.device, how: str = "tensor") -> torch.Tensor:
    """CLIP ``pixel_values`` of ``images`` (float [0, 1], NCHW) on ``device``: ``tensor``, ``clip_pixels`` on the
    device; ``processor``, uint8 arrays through the processor (PickScore's reference path); ``open_clip``, open_clip's
    transform on the device (HPS's reference path)."""
    if how == "tensor":
        return clip_pixels(images.to(device), processor)
    if how == "open_clip":
        return open_clip_pixels(images.to(device), processor)
    from dgx.rewards.base import to_uint8

    return processor(images=list(to_uint8(images)), return_tensors="pt")["pixel_values"].to(device)

"""The reward models' published architectures with random weights, saved as folders the rewards load offline.

For rehearsing the real path where the weights cannot be had (CI, an offline GPU box): PickScore's CLIP ViT-H/14,
GenEval's colour classifier CLIP ViT-L/14 and its detector, Mask2Former with a Swin-S backbone and COCO's 80 classes.
Each is written by ``save_pretrained`` with a processor, so ``PickScore`` and GenEval's ``HFDetector`` /
``ClipColorClassifier`` load it by the same ``from_pretrained`` calls as the real checkpoints. The tokenizer spells only
the words it is given (real vocabulary size, so the embedding tables have their real shapes). ``scale="tiny"`` keeps the
classes and shrinks every width and depth, for the CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from dgx.sampler.tiny import word_tokenizer


def clip_arch(text: tuple[int, ...], vision: tuple[int, ...], projection: int, act: str) -> dict:
    """A ``CLIPConfig``'s keywords: ``text`` = (width, MLP width, layers, heads), ``vision`` = the same and the patch."""
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size")
    return dict(
        text_config=dict(zip(keys, text)),
        vision_config=dict(zip(keys, vision)),
        projection_dim=projection,
        hidden_act=act,
    )


CLIP_VIT_H_14 = clip_arch((1024, 4096, 24, 16), (1280, 5120, 32, 16, 14), 1024, "gelu")  # PickScore_v1's base
CLIP_VIT_L_14 = clip_arch((768, 3072, 12, 12), (1024, 4096, 24, 16, 14), 768, "quick_gelu")  # GenEval's colours
CLIP_TINY = clip_arch((32, 64, 1, 2), (32, 64, 1, 2, 8), 16, "gelu")
CLIP_IMAGE_SIZE = {"paper": 224, "tiny": 32}


def mask2former_arch(
    backbone: dict, queries: int, width: int, layers: tuple[int, int], ffn: tuple[int, int], heads: int
):
    """A ``Mask2FormerConfig``'s keywords: the Swin ``backbone``, ``queries`` object queries, the pixel decoder's and the
    masks' ``width``, (encoder, decoder) ``layers``, (decoder, encoder) feed-forward widths ``ffn`` and ``heads``."""
    return dict(
        backbone=backbone,
        num_queries=queries,
        hidden_dim=width,
        feature_size=width,
        mask_feature_size=width,
        encoder_layers=layers[0],
        decoder_layers=layers[1],
        dim_feedforward=ffn[0],
        encoder_feedforward_dim=ffn[1],
        num_attention_heads=heads,
    )


SWIN_S = dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7, image_size=224)
SWIN_TINY = dict(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2, image_size=64)
MASK2FORMER_SWIN_S = mask2former_arch(SWIN_S, 100, 256, (6, 10), (2048, 1024), 8)  # mask2former-swin-small-coco
MASK2FORMER_TINY = mask2former_arch(SWIN_TINY, 10, 32, (1, 2), (32, 32), 2)


def clip_model(arch: dict, image_size: int):
    """A ``CLIPModel`` of ``arch`` (one of the dicts above) with random weights, CLIP's 49,408-token vocabulary."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(arch["text_config"], vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=1)
    vision = dict(arch["vision_config"], image_size=image_size)
    for part in (text, vision):
        part["hidden_act"] = arch["hidden_act"]
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=arch["projection_dim"])).eval()


def save_clip(
    folder: Path, words: list[str], scale: str = "tiny", arch: dict | None = None, device: str = "cpu"
) -> Path:
    """A CLIP stand-in (``arch``, default ViT-H/14 at paper scale), initialised on ``device``, and its
    ``CLIPProcessor`` in ``folder``."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    size = CLIP_IMAGE_SIZE[scale]
    arch = arch or (CLIP_VIT_H_14 if scale == "paper" else CLIP_TINY)
    with torch.device(device):
        model = clip_model(arch, size)
    model.save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    CLIPProcessor(processor, word_tokenizer(words, 77)).save_pretrained(folder)
    return folder


def mask2former_model(arch: dict, labels: list[str]):
    """A ``Mask2FormerForUniversalSegmentation`` of ``arch`` with random weights, one class per label."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    backbone = SwinConfig(**arch["backbone"], out_features=["stage1", "stage2", "stage3", "stage4"])
    rest = {k: v for k, v in arch.items() if k != "backbone"}
    cfg = Mask2FormerConfig(
        backbone_config=backbone,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **rest,
    )
    return Mask2FormerForUniversalSegmentation(cfg).eval()


def save_mask2former(folder: Path, labels: list[str], scale: str = "tiny", device: str = "cpu") -> Path:
    """GenEval's detector stand-in, initialised on ``device``, and its ``Mask2FormerImageProcessor`` (at paper scale
    the processor's defaults: shorter side 800, longer at most 1333, as GenEval's mmdetection test pipeline; tiny:
    64 px) in ``folder``."""
    from transformers import Mask2FormerImageProcessor

    with torch.device(device):
        model = mask2former_model(MASK2FORMER_SWIN_S if scale == "paper" else MASK2FORMER_TINY, labels)
    model.save_pretrained(folder)
    size = {} if scale == "paper" else {"size": {"height": 64, "width": 64}}
    Mask2FormerImageProcessor(**size).save_pretrained(folder)
    return folder


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

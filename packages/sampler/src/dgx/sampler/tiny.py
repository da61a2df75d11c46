"""Tiny SD3-class pipelines from real diffusers/transformers classes, built offline.

Used for the shapes-world model (trained by ``scripts/train_shapes_model.py``) and for
tests, the way diffusers' own tests use ``get_dummy_components``. The CLIP tokenizer is a
real ``CLIPTokenizer`` whose BPE vocabulary and merges are generated for a word list: each
word gets a left-to-right merge chain (merges of different words can interleave, so some
words end up as a few sub-word tokens) and anything else falls back to characters.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer


def word_tokenizer(words: list[str], max_length: int = 24) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` whose BPE merges spell out the listed (lowercase ASCII) words."""
    chars = list(string.ascii_lowercase)
    vocab: dict[str, int] = {}
    for tok in ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]:
        vocab.setdefault(tok, len(vocab))
    merges: list[str] = []
    for w in sorted(set(words)):
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        left = parts[0]
        for right in parts[1:]:  # merge left to right: c i -> ci, ci r -> cir, ...
            merge = f"{left} {right}"
            if merge not in merges:
                merges.append(merge)
            left = left + right
            vocab.setdefault(left, len(vocab))
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "vocab.json").write_text(json.dumps(vocab))
        (Path(d) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tok = CLIPTokenizer(str(Path(d) / "vocab.json"), str(Path(d) / "merges.txt"), model_max_length=max_length)
        tok.pad_token = "<|endoftext|>"
    return tok


def tiny_sd3_pipeline(
    words: list[str],
    *,
    sample_size: int = 16,
    vae_channels: tuple[int, ...] = (32, 64),
    latent_channels: int = 4,
    text_dim: int = 32,
    text_layers: int = 2,
    layers: int = 2,
    heads: int = 2,
    head_dim: int = 16,
    max_length: int = 24,
    shift: float = 1.0,
    seed: int = 0,
) -> StableDiffusion3Pipeline:
    """A randomly initialised ``StableDiffusion3Pipeline`` with no T5 (text_encoder_3=None).

    Images are ``sample_size * 2 ** (len(vae_channels) - 1)`` pixels square.
    """
    torch.manual_seed(seed)
    tok = word_tokenizer(words, max_length)
    text_cfg = CLIPTextConfig(
        vocab_size=len(tok.get_vocab()), hidden_size=text_dim, intermediate_size=2 * text_dim,
        num_hidden_layers=text_layers, num_attention_heads=2, max_position_embeddings=max_length,
        projection_dim=text_dim, bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_act="gelu",
    )
    transformer = SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=latent_channels, num_layers=layers,
        attention_head_dim=head_dim, num_attention_heads=heads, joint_attention_dim=2 * text_dim,
        caption_projection_dim=heads * head_dim, pooled_projection_dim=2 * text_dim,
        out_channels=latent_channels, pos_embed_max_size=sample_size,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=vae_channels, layers_per_block=1, norm_num_groups=16,
        sample_size=sample_size * 2 ** (len(vae_channels) - 1), shift_factor=0.0, scaling_factor=1.0,
        use_quant_conv=False, use_post_quant_conv=False,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift), vae=vae,
        text_encoder=CLIPTextModelWithProjection(text_cfg), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(text_cfg), tokenizer_2=word_tokenizer(words, max_length),
        text_encoder_3=None, tokenizer_3=None,
    )

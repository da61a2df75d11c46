"""Published SD3-, FLUX-, Qwen-Image- and Wan-class architectures with random weights, built offline (no Hub).

For measuring time and memory of the real model sizes where the weights cannot be had
(CI, an offline GPU box): the SD3.5-Medium transformer (MMDiT-X: 24 blocks, width 1536,
dual attention in blocks 0-12, RMS QK-norm) and the SD3 VAE (16 latent channels, 8x
down-sampling) from their published configs. The CLIP-L / CLIP-G text encoders keep their
widths (768 / 1280, so the conditioning has the real shapes) but only ``text_layers``
layers; T5-XXL is left out and its tokens are zeros, as diffusers pads when
``text_encoder_3`` is None, so the transformer still sees 77 + ``max_sequence_length`` tokens.

FLUX.1-dev's transformer (19 double- and 38 single-stream blocks of width 3072, guidance
embedding, RoPE axes 16/56/56) and VAE likewise; FLUX reads T5 tokens, so T5-XXL keeps its
width (4096) with ``text_layers`` layers, and CLIP-L gives the pooled vector.

The registry builders create the weights directly on the target device in the target dtype:
FLUX.1-dev initialised in float32 on the CPU first would take 48 GB of RAM and minutes.

Each model family's ``stand_in`` (its registry entry's, dgx.grpo.contracts) lives here too: a folder of the family's
pipeline classes with random weights, tiny by default (the contract suite, the CPU rehearsal) or, at
``scale="paper"``, the published architecture (``dgx rehearse --scale paper`` on a GPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import dgx.sampler.compat  # noqa: F401  (before diffusers imports the pipelines)
import torch
from annotated_types import Ge
from dgx.sampler.flux import FluxModel
from dgx.sampler.model import Resolution, SD3Model
from dgx.sampler.tiny import (
    STAND_IN_WORDS,
    flux_scheduler,
    qwen_image_scheduler,
    qwen_text_encoder,
    qwen_tokenizer,
    t5_encoder,
    tiny_flux_pipeline,
    tiny_qwen_image_pipeline,
    tiny_sd3_pipeline,
    tiny_wan_pipeline,
    word_level_tokenizer,
    word_tokenizer,
)
from diffusers import (
    AutoencoderKL,
    AutoencoderKLQwenImage,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
)

SD35_MEDIUM_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)),
    qk_norm="rms_norm",
)
SD3_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=16,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=1.5305,
    shift_factor=0.0609,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
FLUX_DEV_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
FLUX_VAE = dict(SD3_VAE, scaling_factor=0.3611, shift_factor=0.1159)
# Qwen/Qwen-Image's transformer/config.json: 60 double-stream blocks, 20.4B parameters
QWEN_IMAGE_TRANSFORMER = dict(
    patch_size=2,
    in_channels=64,
    out_channels=16,
    num_layers=60,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=3584,
    guidance_embeds=False,
    axes_dims_rope=(16, 56, 56),
)


@contextmanager
def initialised_on(device: str | torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Tensors created inside (parameters at their random init) land on ``device`` in ``dtype``; the
    process's default dtype is restored on exit. Callers still ``.to(device, dtype)`` the result: some modules
    build tables in float32 explicitly (SD3's ``pos_embed``)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


WORDS = "a photo of an the and with on in left right above below red green blue yellow cat dog car".split()


CLIP_TEXT = {"L": dict(width=768, heads=12, layers=12), "G": dict(width=1280, heads=20, layers=32)}  # SD3's encoders
T5_XXL = dict(width=4096, heads=64, layers=24, vocab_size=32128)


def sd35_medium_pipeline(
    layers: int | None = None,
    text_layers: int | None = 1,
    seed: int = 0,
    t5_layers: int | None = None,
    words: list[str] = WORDS,
) -> StableDiffusion3Pipeline:
    """SD3.5-Medium-shaped pipeline with random weights; ``layers`` < 24 cuts the transformer's depth
    (dual attention stays on the first 13 blocks that exist) for quick checks. ``text_layers``: the CLIP encoders'
    depth (None: their published 12 and 32 layers, with CLIP's 49,408-token vocabulary). ``t5_layers``: T5-XXL's
    width with that many layers (None leaves T5 out; 24 is T5-XXL). The tokenizers spell ``words``."""
    torch.manual_seed(seed)
    arch = dict(SD35_MEDIUM_TRANSFORMER)
    if layers is not None:
        arch.update(
            num_layers=layers, dual_attention_layers=tuple(i for i in arch["dual_attention_layers"] if i < layers)
        )
    encoders, tokenizers = [], []
    for enc in CLIP_TEXT.values():
        tok = word_tokenizer(words, 77)
        encoders.append(
            CLIPTextModelWithProjection(
                CLIPTextConfig(
                    vocab_size=len(tok.get_vocab()) if text_layers is not None else 49408,
                    hidden_size=enc["width"],
                    intermediate_size=4 * enc["width"],
                    num_hidden_layers=enc["layers"] if text_layers is None else text_layers,
                    num_attention_heads=enc["heads"],
                    max_position_embeddings=77,
                    projection_dim=enc["width"],
                    bos_token_id=0,
                    eos_token_id=1,
                    pad_token_id=1,
                    hidden_act="gelu",
                )
            )
        )
        tokenizers.append(tok)
    with_t5 = t5_layers is not None
    t5 = T5_XXL
    return StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**arch),
        vae=AutoencoderKL(**SD3_VAE),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=encoders[0],
        tokenizer=tokenizers[0],
        text_encoder_2=encoders[1],
        tokenizer_2=tokenizers[1],
        text_encoder_3=t5_encoder(words, t5["width"], t5_layers, t5["heads"], t5["vocab_size"]) if with_t5 else None,
        tokenizer_3=word_level_tokenizer(words, 512) if with_t5 else None,
    )


def sd35_medium_random(
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    max_sequence_length: Annotated[int, Ge(0)] = 256,
    resolution: Resolution | None = None,
    layers: int | None = None,
    text_layers: int = 1,
) -> SD3Model:
    """Registry builder (``models: sd35m_random``): the pipeline above as an ``SD3Model`` (no
    weights to load, so no ``path``)."""
    with initialised_on(device, dtype):
        pipe = sd35_medium_pipeline(layers, text_layers).to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return SD3Model(pipe, max_sequence_length, device, pad_missing_t5=True, resolution=resolution)


def flux_dev_pipeline(
    layers: int | None = None,
    single_layers: int | None = None,
    text_layers: int | None = 1,
    seed: int = 0,
    words: list[str] = WORDS,
) -> FluxPipeline:
    """FLUX.1-dev-shaped pipeline with random weights; ``layers`` / ``single_layers`` cut the depth for quick checks;
    ``text_layers``: the depth of CLIP-L and T5-XXL (None: their published 12 and 24 layers). The tokenizers spell
    ``words``."""
    torch.manual_seed(seed)
    arch = dict(FLUX_DEV_TRANSFORMER)
    arch.update({k: v for k, v in (("num_layers", layers), ("num_single_layers", single_layers)) if v is not None})
    clip_tok, t5_tok = word_tokenizer(words, 77), word_level_tokenizer(words, 512)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tok.get_vocab()),
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12 if text_layers is None else text_layers,
            num_attention_heads=12,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_act="gelu",
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok.get_vocab()),
            d_model=4096,
            d_kv=64,
            d_ff=10240,
            num_layers=T5_XXL["layers"] if text_layers is None else text_layers,
            num_heads=64,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    return FluxPipeline(
        scheduler=flux_scheduler(),
        vae=AutoencoderKL(**FLUX_VAE),
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=FluxTransformer2DModel(**arch),
    )


def flux_dev_random(
    dtype: torch.dtype = torch.bfloat16,
    device: str = "cpu",
    max_sequence_length: Annotated[int, Ge(0)] = 512,
    resolution: Resolution | None = None,
    layers: int | None = None,
    single_layers: int | None = None,
    text_layers: int = 1,
) -> FluxModel:
    """Registry builder (``models: flux_dev_random``): the pipeline above as a ``FluxModel`` (no
    weights to load, so no ``path``)."""
    with initialised_on(device, dtype):
        pipe = flux_dev_pipeline(layers, single_layers, text_layers).to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return FluxModel(pipe, max_sequence_length, device, resolution=resolution)


# Qwen/Qwen-Image's text_encoder/config.json: Qwen2.5-VL-7B (its language model and vision tower), 8.3B parameters
QWEN25_VL_7B_TEXT = dict(
    hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4
)
QWEN25_VL_7B_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584)


def qwen_image_pipeline(words: list[str] = WORDS, seed: int = 0) -> QwenImagePipeline:
    """Qwen-Image-shaped pipeline with random weights: its 20.4B transformer, Qwen2.5-VL-7B as text encoder (the
    vocabulary cut to the tokenizer's, which spells ``words``) and its video VAE (diffusers' defaults are
    Qwen-Image's)."""
    torch.manual_seed(seed)
    tok = qwen_tokenizer(words)
    text = {**QWEN25_VL_7B_TEXT, "rope_theta": 1000000.0}
    return QwenImagePipeline(
        scheduler=qwen_image_scheduler(),
        vae=AutoencoderKLQwenImage(),
        text_encoder=qwen_text_encoder(tok, text, QWEN25_VL_7B_VISION, [16, 24, 24]),
        tokenizer=tok,
        transformer=QwenImageTransformer2DModel(**QWEN_IMAGE_TRANSFORMER),
    )


# Wan-AI/Wan2.1-T2V-1.3B-Diffusers' transformer/config.json: 30 blocks of width 1536, 1.42B parameters
WAN21_1_3B_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
UMT5_XXL = dict(width=4096, layers=24, heads=64, vocab_size=256384)  # Wan's text encoder (d_ff 10240)


def wan21_pipeline(words: list[str] = WORDS, seed: int = 0) -> WanPipeline:
    """Wan2.1-T2V-1.3B-shaped pipeline with random weights: its transformer, UMT5-XXL's encoder and the video VAE
    (diffusers' defaults are Wan2.1's); the tokenizer spells ``words``."""
    torch.manual_seed(seed)
    u = UMT5_XXL
    return WanPipeline(
        tokenizer=word_level_tokenizer(words, 512),
        text_encoder=t5_encoder(words, u["width"], u["layers"], u["heads"], u["vocab_size"], umt5=True),
        vae=AutoencoderKLWan(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=WanTransformer3DModel(**WAN21_1_3B_TRANSFORMER),
    )


def _save(folder: Path, scale: str, device: str, paper, tiny) -> None:
    """Save the pipeline ``paper()`` (bfloat16, created on ``device``: a GPU's job) or ``tiny()`` into ``folder``."""
    if scale == "paper":
        with initialised_on(device, torch.bfloat16):
            pipe = paper()
    else:
        pipe = tiny()
    pipe.save_pretrained(folder)


def sd3_stand_in(folder: Path, scale: str = "tiny", words: list[str] | None = None, device: str = "cpu") -> dict:
    """The ``sd3`` entry's stand-in: tiny (two blocks, the first with SD3.5's second attention, the last without a
    context output; CLIP-L/G and a one-layer T5), or SD3.5-Medium at ``scale="paper"``; the tokenizers spell
    ``words``. Returns the node arguments that load it."""
    words = sorted(set(words or STAND_IN_WORDS))
    _save(
        folder,
        scale,
        device,
        lambda: sd35_medium_pipeline(text_layers=None, t5_layers=24, words=words),
        lambda: tiny_sd3_pipeline(
            words,
            sample_size=16,
            vae_channels=(16, 16, 16),
            layers=2,
            heads=2,
            head_dim=16,
            text_dim=16,
            max_length=77,
            shift=3.0,
            dual_attention_layers=(0,),
            t5_layers=1,
        ),
    )
    return {"args": {"path": str(folder), "max_sequence_length": 8, "resolution": 32}}


def flux_stand_in(folder: Path, scale: str = "tiny", words: list[str] | None = None, device: str = "cpu") -> dict:
    """The ``flux`` entry's stand-in: a tiny guidance-distilled FluxPipeline at 16 px, or FLUX.1-dev at
    ``scale="paper"``."""
    words = sorted(set(words or STAND_IN_WORDS))
    _save(
        folder,
        scale,
        device,
        lambda: flux_dev_pipeline(text_layers=None, words=words),
        lambda: tiny_flux_pipeline(words),
    )
    return {"args": {"path": str(folder), "max_sequence_length": 8, "resolution": 16}}


def qwen_image_stand_in(folder: Path, scale: str = "tiny", words: list[str] | None = None, device: str = "cpu") -> dict:
    """The ``qwen_image`` entry's stand-in: a tiny QwenImagePipeline at 16 px, or Qwen-Image at ``scale="paper"``."""
    words = sorted(set(words or STAND_IN_WORDS))
    _save(folder, scale, device, lambda: qwen_image_pipeline(words), lambda: tiny_qwen_image_pipeline(words))
    return {"args": {"path": str(folder), "max_sequence_length": 8, "resolution": 16}}


def wan_stand_in(folder: Path, scale: str = "tiny", words: list[str] | None = None, device: str = "cpu") -> dict:
    """The ``wan`` entry's stand-in: a tiny WanPipeline for 5-frame 16 px videos, or Wan2.1-T2V-1.3B at
    ``scale="paper"``."""
    words = sorted(set(words or STAND_IN_WORDS))
    _save(folder, scale, device, lambda: wan21_pipeline(words), lambda: tiny_wan_pipeline(words))
    return {"args": {"path": str(folder), "max_sequence_length": 8, "resolution": 16, "frames": 5}}


def sd35_stand_in(folder: Path) -> dict:
    """``sd35m_random``'s offline stand-in (dgx.grpo.contracts): SD3.5-M's widths with two transformer blocks (the
    last one has no context output, ``to_add_out``), at 64 px, so that the contract checks the family's layers in
    seconds."""
    return {"args": {"layers": 2, "resolution": 64, "max_sequence_length": 8}}


def flux_dev_stand_in(folder: Path) -> dict:
    """``flux_dev_random``'s offline stand-in: FLUX.1-dev's widths with one double- and one single-stream block."""
    return {"args": {"layers": 1, "single_layers": 1, "resolution": 64, "max_sequence_length": 8}}

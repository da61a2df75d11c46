"""Tiny SD3-, FLUX-, Qwen-Image- and Wan-class pipelines from real diffusers/transformers classes, built offline.

Used for the shapes-world model (trained by ``scripts/train_shapes_model.py``) and for
tests, the way diffusers' own tests use ``get_dummy_components``. The CLIP tokenizer is a
real ``CLIPTokenizer`` whose BPE vocabulary and merges are generated for a word list: each
word gets a left-to-right merge chain (merges of different words can interleave, so some
words end up as a few sub-word tokens) and anything else falls back to characters. FLUX's
T5 side gets a word-level ``PreTrainedTokenizerFast`` (tokenizers library) over the same words. Qwen-Image's
``Qwen2Tokenizer`` is a byte-level BPE whose merges spell out its chat template's words and the listed ones, so the
template's system part is 34 tokens, the count the pipeline drops.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import dgx.sampler.compat  # noqa: F401  (before diffusers imports the pipelines)
import torch
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
    CLIPTokenizer,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)


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
        (Path(d) / "merges.txt").write_text("".join(f"{m}\n" for m in ["#version: 0.2", *merges]))
        tok = CLIPTokenizer(str(Path(d) / "vocab.json"), str(Path(d) / "merges.txt"), model_max_length=max_length)
        tok.pad_token = "<|endoftext|>"
    return tok


def word_level_tokenizer(words: list[str], max_length: int = 16) -> PreTrainedTokenizerFast:
    """A whitespace word-level fast tokenizer (ids: <pad> 0, </s> 1, <unk> 2, then the words), T5-style."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length
    )


def _clip_config(vocab_size: int, dim: int, layers: int, max_length: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=dim,
        intermediate_size=2 * dim,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=max_length,
        projection_dim=dim,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="gelu",
    )


def _vae(latent_channels: int, vae_channels: tuple[int, ...], image_size: int, **factors) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=vae_channels,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=image_size,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **factors,
    )


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
    dual_attention_layers: tuple[int, ...] = (),
    seed: int = 0,
    t5_layers: int = 0,
) -> StableDiffusion3Pipeline:
    """A randomly initialised ``StableDiffusion3Pipeline``, with no T5 (text_encoder_3=None) unless ``t5_layers`` > 0
    (then a T5 encoder of width ``2 * text_dim``, the transformer's joint attention width, as T5-XXL's is SD3's).

    Images are ``sample_size * 2 ** (len(vae_channels) - 1)`` pixels square; ``dual_attention_layers`` are the
    blocks with SD3.5-M's second attention (``attn2``).
    """
    torch.manual_seed(seed)
    tok = word_tokenizer(words, max_length)
    text_cfg = _clip_config(len(tok.get_vocab()), text_dim, text_layers, max_length)
    transformer = SD3Transformer2DModel(
        sample_size=sample_size,
        patch_size=2,
        in_channels=latent_channels,
        num_layers=layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=2 * text_dim,
        caption_projection_dim=heads * head_dim,
        pooled_projection_dim=2 * text_dim,
        out_channels=latent_channels,
        pos_embed_max_size=sample_size,
        dual_attention_layers=tuple(dual_attention_layers),
    )
    vae = _vae(
        latent_channels, vae_channels, sample_size * 2 ** (len(vae_channels) - 1), shift_factor=0.0, scaling_factor=1.0
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        vae=vae,
        text_encoder=CLIPTextModelWithProjection(text_cfg),
        tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(text_cfg),
        tokenizer_2=word_tokenizer(words, max_length),
        text_encoder_3=t5_encoder(words, 2 * text_dim, t5_layers, 2) if t5_layers else None,
        tokenizer_3=word_level_tokenizer(words, max_length) if t5_layers else None,
    )


def t5_encoder(
    words: list[str], width: int, layers: int, heads: int, vocab_size: int | None = None, umt5: bool = False
) -> T5EncoderModel | UMT5EncoderModel:
    """A random ``T5EncoderModel`` (gated GELU, as T5 v1.1 / T5-XXL), or with ``umt5`` a ``UMT5EncoderModel`` (Wan's
    text encoder class), for ``word_level_tokenizer(words)``."""
    config, model = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    return model(
        config(
            vocab_size=vocab_size or len(set(words)) + 3,
            d_model=width,
            d_kv=width // heads,
            d_ff=width * 5 // 2,
            num_layers=layers,
            num_heads=heads,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1-dev's scheduler config: shift mu grows with the image token count (dynamic shifting)."""
    return FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        shift=3.0,
    )


def tiny_flux_pipeline(
    words: list[str],
    *,
    vae_channels: tuple[int, ...] = (16, 16),
    latent_channels: int = 4,
    text_dim: int = 16,
    t5_dim: int = 32,
    layers: int = 1,
    single_layers: int = 1,
    heads: int = 2,
    head_dim: int = 16,
    max_length: int = 16,
    guidance_embeds: bool = True,
    seed: int = 0,
) -> FluxPipeline:
    """A randomly initialised ``FluxPipeline`` (CLIP + T5 text encoders, FLUX.1-dev's scheduler);
    ``guidance_embeds=False`` gives a schnell-like transformer that takes true CFG. Pipelines
    default to 128 latent pixels a side; pass a small ``resolution`` to ``FluxModel``."""
    torch.manual_seed(seed)
    clip_tok = word_tokenizer(words, max_length)
    t5_tok = word_level_tokenizer(words, max_length)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok.get_vocab()),
            d_model=t5_dim,
            d_kv=8,
            d_ff=2 * t5_dim,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    rope = (head_dim // 4, head_dim // 4, head_dim // 2)  # FLUX's (t, h, w) axes, summing to the head width
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * latent_channels,
        num_layers=layers,
        num_single_layers=single_layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=t5_dim,
        pooled_projection_dim=text_dim,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=rope,
    )
    return FluxPipeline(
        scheduler=flux_scheduler(),
        vae=_vae(latent_channels, vae_channels, 32, shift_factor=0.1, scaling_factor=0.5),
        text_encoder=CLIPTextModel(_clip_config(len(clip_tok.get_vocab()), text_dim, 1, max_length)),
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )


STAND_IN_WORDS = ["a", "photo", "of", "red", "blue", "two", "circle", "circles", "square", "squares"]


# the words of QwenImagePipeline's chat template (its system prompt, the roles)
QWEN_TEMPLATE_WORDS = (
    "system user assistant Describe the image by detailing color shape size texture quantity text spatial "
    "relationships of objects and background"
).split()


def qwen_tokenizer(words: list[str]) -> Qwen2Tokenizer:
    """A byte-level BPE ``Qwen2Tokenizer`` whose merges spell out the chat template's words and ``words`` (each also
    after a space, GPT-2's "Ġ"), before any other text falls back to bytes; <|im_start|> and <|im_end|> special."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    merges: list[tuple[str, str]] = []
    everything = sorted(set(QWEN_TEMPLATE_WORDS) | set(words))
    for w in ["Ġ" + w for w in everything] + everything:  # after a space first: "Ġ t" ranks before "t h"
        left = w[0]
        for right in w[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
            left += right
            vocab.setdefault(left, len(vocab))
    vocab.setdefault("<|endoftext|>", len(vocab))
    with tempfile.TemporaryDirectory() as d:  # files: what both the slow and the fast Qwen2Tokenizer read
        (Path(d) / "vocab.json").write_text(json.dumps(vocab))
        (Path(d) / "merges.txt").write_text("".join(f"{a} {b}\n" for a, b in [("#version:", "0.2"), *merges]))
        tok = Qwen2Tokenizer(str(Path(d) / "vocab.json"), str(Path(d) / "merges.txt"))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tok


def qwen_text_encoder(tok, text: dict, vision: dict, mrope_section: list[int]) -> Qwen2_5_VLForConditionalGeneration:
    """A random Qwen2.5-VL (Qwen-Image's text encoder class) of the ``text`` and ``vision`` sizes, its vocabulary and
    end token the tokenizer ``tok``'s."""
    rope = {"mrope_section": mrope_section, "rope_type": "default", "type": "default"}
    ends = {"bos_token_id": None, "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>")}
    config = Qwen2_5_VLConfig(
        text_config={**text, "rope_scaling": rope, "vocab_size": len(tok), **ends},
        vision_config=vision,
        hidden_size=text["hidden_size"],
        vocab_size=len(tok),
        **ends,
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def qwen_image_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Qwen-Image's kind of schedule: dynamic shifting with an exponential time shift, the last sigma stretched to
    0.02."""
    return FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift=1.0,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )


def tiny_qwen_image_pipeline(
    words: list[str],
    *,
    latent_channels: int = 4,
    text_dim: int = 16,
    layers: int = 2,
    heads: int = 2,
    head_dim: int = 16,
    seed: int = 0,
) -> QwenImagePipeline:
    """A randomly initialised ``QwenImagePipeline``: a Qwen2.5-VL text encoder of one layer, the video VAE (4x
    downsampling here) and a transformer of ``layers`` blocks. Pipelines default to 512 px; pass a small
    ``resolution`` to ``QwenImageModel``."""
    torch.manual_seed(seed)
    tok = qwen_tokenizer(words)
    text = dict(hidden_size=text_dim, intermediate_size=text_dim, num_hidden_layers=1, num_attention_heads=2)
    vision = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=16)
    text_encoder = qwen_text_encoder(tok, {**text, "num_key_value_heads": 2}, vision, [1, 1, 2])
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * latent_channels,
        out_channels=latent_channels,
        num_layers=layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=text_dim,
        axes_dims_rope=(head_dim // 2, head_dim // 4, head_dim // 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=24,
        z_dim=latent_channels,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.1 * (i % 3 - 1) for i in range(latent_channels)],
        latents_std=[1.0 + 0.25 * (i % 2) for i in range(latent_channels)],
    )
    return QwenImagePipeline(
        scheduler=qwen_image_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        transformer=transformer,
    )


def tiny_wan_pipeline(words: list[str], *, layers: int = 2, heads: int = 2, head_dim: int = 12, seed: int = 0):
    """A randomly initialised Wan2.1-class ``WanPipeline``: a one-layer UMT5 encoder, the causal video VAE (16 latent
    channels, 4x in time, 8x in space) at toy widths and a transformer of ``layers`` blocks; the scheduler is flow
    matching with Wan2.1's 480p shift, 3."""
    torch.manual_seed(seed)
    tok = word_level_tokenizer(words, 512)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    return WanPipeline(
        tokenizer=tok,
        text_encoder=t5_encoder(words, 32, 1, 2, len(tok.get_vocab()), umt5=True),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=transformer,
    )

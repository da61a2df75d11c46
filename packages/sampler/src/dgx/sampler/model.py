"""Model adapters: what the sampler needs from a text-to-image flow-matching model.

``FlowModel`` is the interface (prompt encoding, velocity with classifier-free guidance,
latent init, decode, timestep grid); ``SD3Model`` implements it on the components of a
diffusers ``StableDiffusion3Pipeline`` loaded from a Hub id or a local folder, and
``dgx.sampler.flux.FluxModel`` on a ``FluxPipeline``'s.

Image convention everywhere in dgx: float tensors in [0, 1], NCHW.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, ClassVar, Protocol

import torch
from annotated_types import Ge, Gt, Le, MultipleOf
from dgx.sampler.errors import SamplerError

# an image side in pixels, up to 8,192: SD3's and FLUX's latents are 8x smaller and their patches (FLUX: packing) 2x2
Resolution = Annotated[int, Gt(0), Le(8192), MultipleOf(16)]


@dataclass
class Conditioning:
    """Per-sample prompt conditioning (positive and, for CFG, negative)."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    neg_embeds: torch.Tensor | None = None
    neg_pooled: torch.Tensor | None = None

    def index(self, idx: torch.Tensor | list[int]) -> "Conditioning":
        """Rows ``idx`` (e.g. ``repeat_interleave`` of prompt indices for G samples each)."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.embeds.device)
        return Conditioning(
            *(None if getattr(self, f.name) is None else getattr(self, f.name)[idx] for f in fields(self))
        )

    @staticmethod
    def cat(items: list["Conditioning"]) -> "Conditioning":
        return Conditioning(
            *(
                None if getattr(items[0], f.name) is None else torch.cat([getattr(c, f.name) for c in items])
                for f in fields(Conditioning)
            )
        )


def _dtype_keyword(diffusers_version: str) -> str:
    """diffusers >= 0.40 takes ``dtype=`` (and warns on ``torch_dtype=``); older releases only ``torch_dtype=``."""
    from packaging.version import Version

    return "dtype" if Version(diffusers_version) >= Version("0.40.0") else "torch_dtype"


def guided(v_u: torch.Tensor, v_c: torch.Tensor, guidance: float, detach_uncond: bool) -> torch.Tensor:
    """Classifier-free guidance v_u + w (v_c - v_u); ``detach_uncond`` stops the gradient through v_u."""
    v_u = v_u.detach() if detach_uncond else v_u
    return v_u + guidance * (v_c - v_u)


class FlowModel(Protocol):
    """What samplers, rewards and the trainer call on a model. ``lora_targets``: the module-name suffixes a LoRA
    adapts by default (peft ``target_modules``), the family's reference choice; ``calls``, ``evaluations`` and
    ``decodes`` count its work (``PipelineModel``)."""

    transformer: torch.nn.Module
    lora_targets: tuple[str, ...]
    calls: int
    evaluations: int
    decodes: int

    def encode(self, prompts: list[str], negative: str = "") -> Conditioning: ...
    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, guidance: float, detach_uncond: bool = False
    ) -> torch.Tensor: ...
    def init_latents(self, n: int, generator, height: int | None = None, width: int | None = None) -> torch.Tensor: ...
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...
    def grid(self, steps: int) -> torch.Tensor: ...


def load_pipeline(pipeline_cls, path: str | Path, dtype: torch.dtype, device: str, **kwargs):
    """``pipeline_cls.from_pretrained`` (Hub id or local folder) with progress bars off, on ``device``;
    a load failure says what works offline."""
    import diffusers

    kwargs[_dtype_keyword(diffusers.__version__)] = dtype
    try:
        pipe = pipeline_cls.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise SamplerError(
            f"could not load a {pipeline_cls.__name__} from {str(path)!r}"
            + (" (HF_HUB_OFFLINE=1: only local folders and cached Hub ids work)" if offline else "")
            + f"; point model.path at a local folder saved with save_pretrained. Cause: {e}"
        ) from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def shifted_grid(model, steps: int) -> torch.Tensor:
    """FLUX's and Qwen-Image's pipelines' sigmas for ``steps`` steps at ``model.resolution``: linspace(1, 1/T, T)
    shifted by mu, which grows with the image token count (the scheduler's dynamic shifting), then 0."""
    import numpy as np
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    sched = model._scheduler(steps)
    tokens = (model.resolution // (model.pipe.vae_scale_factor * 2)) ** 2
    c = sched.config
    mu = calculate_shift(
        tokens,
        c.get("base_image_seq_len", 256),
        c.get("max_image_seq_len", 4096),
        c.get("base_shift", 0.5),
        c.get("max_shift", 1.15),
    )
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu, device="cpu")
    return sched.sigmas.float().to(model.device)


class PipelineModel:
    """What the diffusers adapters share: NCHW float32 latents drawn per sample, VAE decoding, and
    ``calls``, the count of transformer forward passes (a CFG pair counts once; it is one batch),
    ``evaluations``, the count of per-image forward passes (a batch of B counts B, a CFG pair 2B), and
    ``decodes``, the count of images the VAE decoded: the work.
    ``transformer`` is what forward passes go through (a trainer may swap in a DDP wrapper);
    config and dtype are read from the pipeline's own module."""

    pipeline: ClassVar[str]  # the diffusers pipeline class the family loads through
    default_dtype: ClassVar[torch.dtype] = torch.float32
    default_max_sequence_length: ClassVar[int] = 256

    def __init__(self, pipe, device: str | torch.device, resolution: int | None, multiple: int, latent_channels: int):
        if resolution is not None and (resolution <= 0 or resolution % multiple):
            raise SamplerError(
                f"resolution {resolution} px must be a positive multiple of {multiple} (VAE factor x patch size)"
            )
        self.pipe = pipe
        self.resolution = resolution or pipe.default_sample_size * pipe.vae_scale_factor
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        self.device = torch.device(device)
        self.latent_channels = latent_channels
        self.calls = self.evaluations = self.decodes = 0

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype | None = None,
        device: str = "cpu",
        max_sequence_length: Annotated[int, Ge(0)] | None = None,
        resolution: Resolution | None = None,
        transformer: torch.nn.Module | None = None,
    ):
        """Load from a local pipeline folder or a Hub id (offline: a local folder or cached id).

        Args:
            path: The pipeline's folder (saved with ``save_pretrained``) or Hub id.
            dtype: The weights' dtype (default: the family's).
            device: Where the model runs.
            max_sequence_length: Prompt tokens to encode (default: the family's).
            resolution: The image side in pixels (default: the pipeline's).
            transformer: One already built (dgx's sharded one) instead of the pipeline's own.
        """
        pipe, msl = cls.pipeline_from(path, dtype, device, max_sequence_length, transformer)
        return cls(pipe, max_sequence_length=msl, device=device, resolution=resolution)

    @classmethod
    def pipeline_from(
        cls,
        path: str | Path,
        dtype: torch.dtype | None,
        device: str,
        max_sequence_length: int | None,
        transformer: torch.nn.Module | None = None,
    ):
        """The family's ``pipeline`` from ``path`` in ``dtype`` (default the family's) on ``device`` (with
        ``transformer`` instead of its own, if given), and the prompt length to encode (default the family's): what
        every family's ``from_pretrained`` starts with."""
        import dgx.sampler.compat  # noqa: F401  (before diffusers imports the pipeline)
        import diffusers

        pipe_cls = getattr(diffusers, cls.pipeline)
        extra = {} if transformer is None else {"transformer": transformer}
        pipe = load_pipeline(pipe_cls, path, dtype or cls.default_dtype, device, **cls.load_kwargs(path), **extra)
        return pipe, cls.default_max_sequence_length if max_sequence_length is None else max_sequence_length

    @classmethod
    def load_kwargs(cls, path: str | Path) -> dict:
        """Extra keywords of the pipeline's ``from_pretrained`` for ``path`` (none by default)."""
        return {}

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.transformer.dtype

    def init_latents(
        self,
        n: int,
        generator: torch.Generator | list[torch.Generator],
        height: int | None = None,
        width: int | None = None,
    ) -> torch.Tensor:
        """x_T ~ N(0, I) in float32, (n, C, h, w).

        Args:
            n: How many samples.
            generator: A generator, or a list of ``n`` (each sample drawn from its own).
            height: The image height in pixels (default: the model's resolution).
            width: The image width in pixels (default: the model's resolution).
        """
        from diffusers.utils.torch_utils import randn_tensor

        f = self.pipe.vae_scale_factor
        h = (height or self.resolution) // f
        w = (width or self.resolution) // f
        return randn_tensor(
            (n, self.latent_channels, h, w), generator=generator, device=self.device, dtype=torch.float32
        )

    def _scheduler(self, steps: int):
        """A fresh copy of the pipeline's scheduler (the pipeline's own stays untouched) for ``steps`` >= 1 steps."""
        if steps < 1:
            raise SamplerError(f"sampler steps must be >= 1, got {steps}")
        return self.pipe.scheduler.__class__.from_config(self.pipe.scheduler.config)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (n, C, h, w) -> images float [0, 1] NCHW.

        Args:
            latents: Clean latents (t = 0), float32.
        """
        self.decodes += latents.shape[0]
        cfg = self.vae.config
        z = latents.to(self.vae.dtype) / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        img = self.vae.decode(z).sample.float()
        return (img / 2 + 0.5).clamp(0, 1)


class SD3Model(PipelineModel):
    """SD3 / SD3.5 (and the shapes world) through diffusers' StableDiffusion3Pipeline parts."""

    pipeline = "StableDiffusion3Pipeline"

    # Flow-GRPO's (scripts/train_sd3.py): the joint attention only, not SD3.5's second attention (attn2)
    lora_targets = (
        "attn.add_k_proj",
        "attn.add_q_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "attn.to_k",
        "attn.to_out.0",
        "attn.to_q",
        "attn.to_v",
    )

    def __init__(
        self,
        pipe,
        max_sequence_length: int = 256,
        device: str | torch.device = "cpu",
        pad_missing_t5: bool = False,
        resolution: int | None = None,
    ):
        """Without T5 the prompt is CLIP tokens only, unless ``pad_missing_t5`` appends
        ``max_sequence_length`` zero tokens in its place (diffusers' own padding). ``resolution``
        is the image side in pixels (default: the pipeline's, 1024 for SD3.5)."""
        super().__init__(
            pipe,
            device,
            resolution,
            pipe.vae_scale_factor * pipe.transformer.config.patch_size,
            pipe.transformer.config.in_channels,
        )
        self.max_sequence_length = 0 if pipe.text_encoder_3 is None and not pad_missing_t5 else max_sequence_length

    @classmethod
    def load_kwargs(cls, path: str | Path) -> dict:
        """A saved folder without T5 (the shapes world) loads without it."""
        no_t5 = Path(path).is_dir() and not (Path(path) / "text_encoder_3").is_dir()
        return {"text_encoder_3": None, "tokenizer_3": None} if no_t5 else {}

    @torch.no_grad()
    def encode(self, prompts: list[str], negative: str = "") -> Conditioning:
        """Encode each prompt once (and the negative prompt once).

        Args:
            prompts: The prompts.
            negative: The negative prompt of classifier-free guidance.
        """
        pe, _, pooled, _ = self.pipe.encode_prompt(
            prompts,
            None,
            None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        ne, _, npooled, _ = self.pipe.encode_prompt(
            [negative],
            None,
            None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        n = len(prompts)
        return Conditioning(pe, pooled, ne.expand(n, -1, -1), npooled.expand(n, -1))

    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, guidance: float = 1.0, detach_uncond: bool = False
    ) -> torch.Tensor:
        """v(x, t, c) in float32; CFG when guidance > 1: v = v_u + w (v_c - v_u).

        Args:
            x: Latents (B, C, h, w).
            t: Times, one per sample (B,), in [0, 1].
            cond: The samples' conditioning.
            guidance: The classifier-free guidance scale w.
            detach_uncond: No gradient through v_u (Flow-GRPO's training).
        """
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(x.shape[0])
        xm = x.to(self.dtype)
        self.calls += 1
        cfg = guidance > 1.0 and cond.neg_embeds is not None
        self.evaluations += x.shape[0] * (2 if cfg else 1)
        if cfg:
            out = self.transformer(
                torch.cat([xm, xm]),
                encoder_hidden_states=torch.cat([cond.neg_embeds, cond.embeds]),
                pooled_projections=torch.cat([cond.neg_pooled, cond.pooled]),
                timestep=torch.cat([t, t]) * 1000,
            ).sample.float()
            return guided(*out.chunk(2), guidance, detach_uncond)
        return self.transformer(
            xm, encoder_hidden_states=cond.embeds, pooled_projections=cond.pooled, timestep=t * 1000
        ).sample.float()

    def grid(self, steps: int) -> torch.Tensor:
        """The scheduler's sigmas for ``steps`` steps (with its shift): ``1 = t_0 > ... > t_T = 0``."""
        sched = self._scheduler(steps)
        sched.set_timesteps(steps, device="cpu")
        return sched.sigmas.float().to(self.device)

"""Wan2.1 text-to-video through diffusers' ``WanPipeline`` parts, behind the ``FlowModel`` interface.

Latents are five-dimensional, (n, 16, f, h, w): f = (frames - 1) / 4 + 1 latent frames of the causal video VAE,
8x smaller in space. The sampler's steps treat them as any latent (their log-probs average over every non-batch
dimension). A prompt is UMT5's last hidden state, zero past its tokens (the pipeline's padding), and guidance is CFG
with the negative prompt. ``decode`` returns videos (n, frames, 3, H, W) in [0, 1] and counts each frame as a decoded
image; rewards score them frame by frame (``dgx.rewards.base.frame_wise``). The timestep grid is the scheduler's own
(a static shift; the pipeline passes t x 1000 to the transformer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from annotated_types import Ge, Gt, Le, MultipleOf
from dgx.sampler.errors import SamplerError
from dgx.sampler.model import Conditioning, PipelineModel, guided

# a side in pixels: 8x down-sampling by the VAE, 2x2 patches
Side = Annotated[int, Gt(0), Le(8192), MultipleOf(16)]


class WanModel(PipelineModel):
    """Wan2.1 text-to-video (or a tiny WanPipeline) as a ``FlowModel`` on videos of ``frames`` frames."""

    pipeline = "WanPipeline"
    default_dtype = torch.bfloat16
    default_max_sequence_length = 512

    # DiffSynth-Studio's Wan LoRA (q, k, v, o of self- and cross-attention, ffn.0 and ffn.2), in diffusers' names
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")

    def __init__(
        self,
        pipe,
        max_sequence_length: int = 512,
        device: str | torch.device = "cpu",
        resolution: int | None = None,
        height: int | None = None,
        width: int | None = None,
        frames: int = 33,
    ):
        if frames < 1 or (frames - 1) % pipe.vae_scale_factor_temporal:
            raise SamplerError(f"frames {frames} must be 1 + a multiple of {pipe.vae_scale_factor_temporal}")
        height, width = height or resolution or 480, width or resolution or 832
        if width % 16:
            raise SamplerError(f"width {width} px must be a positive multiple of 16 (VAE factor 8 x patch 2)")
        super().__init__(pipe, device, height, 16, pipe.transformer.config.in_channels)
        self.height, self.width = height, width
        self.frames, self.max_sequence_length = frames, max_sequence_length

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype | None = None,
        device: str = "cpu",
        max_sequence_length: Annotated[int, Ge(1)] | None = None,
        resolution: Side | None = None,
        height: Side | None = None,
        width: Side | None = None,
        frames: Annotated[int, Ge(1)] = 33,
        transformer: torch.nn.Module | None = None,
    ):
        """Load from a local pipeline folder or a Hub id; ``resolution`` is a square side, or ``height`` and
        ``width`` (default 480 x 832), ``frames`` the video's length (1 + a multiple of 4); ``transformer``: one
        already built (dgx's sharded one) instead of the pipeline's own."""
        pipe, msl = cls.pipeline_from(path, dtype, device, max_sequence_length, transformer)
        return cls(pipe, msl, device, resolution, height, width, frames)

    @torch.no_grad()
    def encode(self, prompts: list[str], negative: str = "") -> Conditioning:
        """UMT5 token embeddings per prompt and the negative prompt's (Wan has no pooled embedding: an empty one)."""
        n = len(prompts)
        kw = dict(do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length, device=self.device)
        pe, _ = self.pipe.encode_prompt(prompts, **kw)
        ne, _ = self.pipe.encode_prompt([negative], **kw)
        empty = pe.new_zeros(n, 0)
        return Conditioning(pe, empty, ne.expand(n, -1, -1), empty)

    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, guidance: float = 1.0, detach_uncond: bool = False
    ) -> torch.Tensor:
        """v(x, t, c) in float32 for (n, C, f, h, w) ``x``; ``t`` per sample (B,) in [0, 1]; CFG with the negative
        prompt when ``guidance`` > 1."""
        b = x.shape[0]
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(b) * 1000
        cfg = guidance > 1.0
        self.calls += 1
        self.evaluations += b * (2 if cfg else 1)

        def run(embeds: torch.Tensor) -> torch.Tensor:
            out = self.transformer(hidden_states=x.to(self.dtype), timestep=t, encoder_hidden_states=embeds)
            return out[0].float()

        v_c = run(cond.embeds)
        return guided(run(cond.neg_embeds), v_c, guidance, detach_uncond) if cfg else v_c

    def init_latents(self, n: int, generator, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """x_T ~ N(0, I) in float32, (n, C, f, h, w); a list of ``n`` generators draws each sample from its own."""
        from diffusers.utils.torch_utils import randn_tensor

        f = self.pipe.vae_scale_factor_spatial
        shape = (n, self.latent_channels, (self.frames - 1) // self.pipe.vae_scale_factor_temporal + 1)
        shape += ((height or self.height) // f, (width or self.width) // f)
        return randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (n, C, f, h, w) -> videos float [0, 1] (n, frames, 3, H, W); each frame counts as a decode."""
        cfg = self.vae.config
        z = latents.to(self.vae.dtype)
        mean = torch.tensor(cfg.latents_mean, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
        video = self.vae.decode(z * std + mean, return_dict=False)[0].float()  # (n, 3, frames, H, W)
        self.decodes += video.shape[0] * video.shape[2]
        return (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)

    def grid(self, steps: int) -> torch.Tensor:
        """The scheduler's sigmas for ``steps`` steps: ``1 = t_0 > ... > t_T = 0``."""
        sched = self._scheduler(steps)
        sched.set_timesteps(steps, device="cpu")
        return sched.sigmas.float().to(self.device)

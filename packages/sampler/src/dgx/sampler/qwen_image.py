"""Qwen-Image through diffusers' ``QwenImagePipeline`` parts, behind the ``FlowModel`` interface.

The sampler keeps latents NCHW (n, 16, h, w): the VAE's five-dimensional latents without their single frame.
``velocity`` packs them into 2x2-patch tokens as the pipeline does and unpacks the prediction. A prompt is the last
hidden state of the Qwen2.5-VL text encoder over the pipeline's chat template (its first 34 tokens dropped), padded
with a mask, which ``Conditioning.pooled`` carries (Qwen-Image has no pooled embedding). Guidance is the pipeline's
true CFG with the negative prompt, rescaled per token to the norm of the conditional prediction. The timestep grid
is the pipeline's: sigmas linspace(1, 1/T, T) shifted by mu from the image token count, then 0.
"""

from __future__ import annotations

import torch
from dgx.sampler.model import Conditioning, PipelineModel, guided, shifted_grid


class QwenImageModel(PipelineModel):
    """Qwen-Image (or a tiny QwenImagePipeline) as a ``FlowModel``."""

    pipeline = "QwenImagePipeline"
    default_dtype = torch.bfloat16
    default_max_sequence_length = 512

    # DiffSynth-Studio's Qwen-Image LoRA (attention of both streams, their modulation and second MLP layer)
    lora_targets = (
        "to_q",
        "to_k",
        "to_v",
        "add_q_proj",
        "add_k_proj",
        "add_v_proj",
        "to_out.0",
        "to_add_out",
        "img_mlp.net.2",
        "img_mod.1",
        "txt_mlp.net.2",
        "txt_mod.1",
    )

    def __init__(
        self, pipe, max_sequence_length: int = 512, device: str | torch.device = "cpu", resolution: int | None = None
    ):
        super().__init__(pipe, device, resolution, pipe.vae_scale_factor * 2, pipe.transformer.config.in_channels // 4)
        self.max_sequence_length = max_sequence_length

    @torch.no_grad()
    def encode(self, prompts: list[str], negative: str = "") -> Conditioning:
        """Token embeddings and their mask per prompt (and the negative prompt's, for every sample)."""
        n = len(prompts)

        def one(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            embeds, mask = self.pipe.encode_prompt(
                texts, device=self.device, max_sequence_length=self.max_sequence_length
            )
            return embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device) if mask is None else mask

        pe, mask = one(prompts)
        ne, nmask = one([negative])
        return Conditioning(pe, mask, ne.expand(n, -1, -1), nmask.expand(n, -1))

    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, guidance: float = 1.0, detach_uncond: bool = False
    ) -> torch.Tensor:
        """v(x, t, c) in float32 for NCHW ``x``; ``t`` per sample (B,) in [0, 1]; with ``guidance`` > 1, true CFG
        rescaled to the conditional prediction's norm (no gradient through the negative branch if
        ``detach_uncond``)."""
        b, c, h, w = x.shape
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(b)
        tokens = self.pipe._pack_latents(x.to(self.dtype), b, c, h, w)
        img_shapes = [[(1, h // 2, w // 2)]] * b
        cfg = guidance > 1.0
        self.calls += 1
        self.evaluations += b * (2 if cfg else 1)

        def run(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.transformer(
                hidden_states=tokens,
                timestep=t.to(self.dtype),
                encoder_hidden_states=embeds,
                encoder_hidden_states_mask=None if mask.all() else mask,
                img_shapes=img_shapes,
                return_dict=False,
            )[0]

        v = run(cond.embeds, cond.pooled)
        if cfg:
            v_c = v
            v = guided(run(cond.neg_embeds, cond.neg_pooled), v_c, guidance, detach_uncond)
            v = v * (torch.norm(v_c, dim=-1, keepdim=True) / torch.norm(v, dim=-1, keepdim=True))
        f = self.pipe.vae_scale_factor
        return self.pipe._unpack_latents(v, h * f, w * f, f)[:, :, 0].float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (n, C, h, w) -> images float [0, 1] NCHW, through the video VAE's single frame."""
        self.decodes += latents.shape[0]
        cfg = self.vae.config
        z = latents[:, :, None].to(self.vae.dtype)
        mean = torch.tensor(cfg.latents_mean, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
        img = self.vae.decode(z * std + mean, return_dict=False)[0][:, :, 0].float()
        return (img / 2 + 0.5).clamp(0, 1)

    def grid(self, steps: int) -> torch.Tensor:
        """The pipeline's sigmas for ``steps`` steps at this resolution: ``1 = t_0 > ... > t_T = 0``."""
        return shifted_grid(self, steps)

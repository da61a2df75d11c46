"""FLUX through diffusers' ``FluxPipeline`` parts, behind the same ``FlowModel`` interface.

The sampler keeps latents NCHW (n, 16, h, w) as for SD3; ``velocity`` packs them into FLUX's
2x2-patch tokens (with their position ids), runs the transformer and unpacks its output.
FLUX.1-dev is guidance-distilled: ``guidance`` feeds its guidance embedding (one forward pass).
A transformer without that embedding (FLUX.1-schnell, or a de-distilled model) takes true
classifier-free guidance with the negative prompt when guidance > 1, as SD3 does.
The timestep grid is the pipeline's: sigmas linspace(1, 1/T, T) shifted by mu, which grows
with the number of image tokens (dynamic shifting), then 0.
"""

from __future__ import annotations

import torch
from dgx.sampler.errors import SamplerError
from dgx.sampler.model import Conditioning, PipelineModel, guided, shifted_grid


class FluxModel(PipelineModel):
    """FLUX.1 [dev] / [schnell] (or a tiny FluxPipeline) as a ``FlowModel``."""

    pipeline = "FluxPipeline"
    default_dtype = torch.bfloat16
    default_max_sequence_length = 512

    # Flow-GRPO's (scripts/train_flux.py): attention and feed-forward of the double blocks; peft matches suffixes, so
    # the single blocks' attn.to_q / to_k / to_v are adapted too
    lora_targets = (
        "attn.to_k",
        "attn.to_q",
        "attn.to_v",
        "attn.to_out.0",
        "attn.add_k_proj",
        "attn.add_q_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "ff.net.0.proj",
        "ff.net.2",
        "ff_context.net.0.proj",
        "ff_context.net.2",
    )

    def __init__(
        self, pipe, max_sequence_length: int = 512, device: str | torch.device = "cpu", resolution: int | None = None
    ):
        if pipe.text_encoder_2 is None:
            raise SamplerError(
                "FLUX needs its T5 text encoder (text_encoder_2): its tokens are the transformer's text input"
            )
        super().__init__(pipe, device, resolution, pipe.vae_scale_factor * 2, pipe.transformer.config.in_channels // 4)
        self.max_sequence_length = max_sequence_length

    @property
    def distilled_guidance(self) -> bool:
        """True when the transformer embeds the guidance scale (FLUX.1-dev) instead of taking CFG."""
        return bool(self.pipe.transformer.config.guidance_embeds)

    @torch.no_grad()
    def encode(self, prompts: list[str], negative: str = "") -> Conditioning:
        """T5 token embeddings and the CLIP pooled embedding, per prompt (and the negative prompt's)."""
        kw = dict(device=self.device, max_sequence_length=self.max_sequence_length)
        pe, pooled, _ = self.pipe.encode_prompt(prompts, None, **kw)
        if self.distilled_guidance:  # no negative branch is ever run
            return Conditioning(pe, pooled)
        ne, npooled, _ = self.pipe.encode_prompt([negative], None, **kw)
        n = len(prompts)
        return Conditioning(pe, pooled, ne.expand(n, -1, -1), npooled.expand(n, -1))

    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, guidance: float = 1.0, detach_uncond: bool = False
    ) -> torch.Tensor:
        """v(x, t, c) in float32 for NCHW ``x``; ``t`` per sample (B,) in [0, 1]; with true CFG, no gradient
        through the unconditional branch if ``detach_uncond`` (a guidance-distilled model has no such branch)."""
        b, c, h, w = x.shape
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(b)
        tokens = self.pipe._pack_latents(x.to(self.dtype), b, c, h, w)
        img_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, x.device, self.dtype)
        txt_ids = torch.zeros(cond.embeds.shape[1], 3, device=x.device, dtype=self.dtype)
        self.calls += 1
        self.evaluations += b * (
            2 if guidance > 1.0 and cond.neg_embeds is not None and not self.distilled_guidance else 1
        )

        def run(tok, embeds, pooled, tt, g):
            out = self.transformer(
                hidden_states=tok,
                encoder_hidden_states=embeds,
                pooled_projections=pooled,
                timestep=tt,
                guidance=g,
                txt_ids=txt_ids,
                img_ids=img_ids,
                return_dict=False,
            )[0]
            f = self.pipe.vae_scale_factor
            return self.pipe._unpack_latents(out, h * f, w * f, f).float()

        if self.distilled_guidance:
            return run(tokens, cond.embeds, cond.pooled, t, torch.full((b,), float(guidance), device=x.device))
        if guidance > 1.0 and cond.neg_embeds is not None:
            v_u, v_c = run(
                torch.cat([tokens, tokens]),
                torch.cat([cond.neg_embeds, cond.embeds]),
                torch.cat([cond.neg_pooled, cond.pooled]),
                torch.cat([t, t]),
                None,
            ).chunk(2)
            return guided(v_u, v_c, guidance, detach_uncond)
        return run(tokens, cond.embeds, cond.pooled, t, None)

    def grid(self, steps: int) -> torch.Tensor:
        """The pipeline's sigmas for ``steps`` steps at this resolution: ``1 = t_0 > ... > t_T = 0``."""
        return shifted_grid(self, steps)

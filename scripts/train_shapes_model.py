"""Train the shapes-world model from scratch: a tiny SD3 pipeline (real diffusers classes).

Phase 1 trains the AutoencoderKL on rendered scenes and sets its shift/scaling factors
from the latent statistics; phase 2 trains the SD3 transformer and both CLIP text encoders
with the rectified-flow loss (x_t = (1 - t) x_0 + t eps, target v = eps - x_0, SD3's
logit-normal t), dropping 10% of prompts for classifier-free guidance. Captions are
sampled tag-uniformly from the whole shapes grammar (the base model's "pretraining data";
the train/test split only concerns the RL prompts). ``--caption-noise P`` makes P of the pairs
show a one-word neighbour of their caption (a model that draws well and follows prompts worse;
research/experiments/shapes_web).

    python scripts/train_shapes_model.py --out runs/shapes_model [--steps 5000]
    python scripts/train_shapes_model.py --out runs/shapes_model --init-from runs/shapes_model/step_05000 --steps N

Checkpoints land in OUT/step_XXXXX (pipeline folders, loadable by the SD3 adapter); the
one shipped is copied to packages/rewards/src/dgx/rewards/shapes/weights by --install.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dgx.rewards.shapes import prompts as P
from dgx.rewards.shapes import render as R
from dgx.sampler.tiny import tiny_sd3_pipeline

WEIGHTS = Path(__file__).resolve().parents[1] / "packages/rewards/src/dgx/rewards/shapes/weights"
ARCH = dict(
    sample_size=16,
    vae_channels=(32, 64),
    latent_channels=4,
    text_dim=32,
    text_layers=2,
    layers=4,
    heads=3,
    head_dim=32,
    max_length=24,
    shift=1.0,
)


def dataset(
    n: int,
    seed: int,
    sizes: tuple[int, int] = (R.MIN_SIZE, R.MAX_SIZE),
    gap: int = R.GAP,
    caption_noise: float = 0.0,
    caption_swap: float = 0.0,
) -> tuple[list[str], torch.Tensor]:
    """``n`` (prompt, image) pairs, tags sampled uniformly; images float [-1, 1] NCHW; shape sides and
    gaps as ``render.scene_for`` takes them. With ``caption_noise`` p, a pair's image shows, with
    probability p, a one-word neighbour of its caption instead (alt-text that gets one detail wrong); with
    ``caption_swap`` q, with probability q, the caption's ``prompts.swapped`` twin (the same error for every prompt)."""
    rng, pick = np.random.default_rng(seed), random.Random(seed)
    by_tag = {t: [m for m in P.all_prompts() if m["tag"] == t] for t in P.TAGS}
    near = P.one_word_neighbours(P.all_prompts()) if caption_noise > 0 else {}
    twin = P.swapped(P.all_prompts()) if caption_swap > 0 else {}
    texts, imgs = [], np.empty((n, 32, 32, 3), np.uint8)
    for i in range(n):
        meta = pick.choice(by_tag[pick.choice(P.TAGS)])
        shown = pick.choice(near[meta["prompt"]]) if near and pick.random() < caption_noise else meta
        if twin and pick.random() < caption_swap:
            shown = twin[meta["prompt"]]
        imgs[i], _ = R.render_prompt(shown, rng, sizes, gap)
        texts.append(meta["prompt"])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    return texts, x


def train_vae(vae, x: torch.Tensor, steps: int, bs: int, log) -> None:
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        batch = x[torch.randint(len(x), (bs,), generator=g)]
        post = vae.encode(batch).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        loss = F.mse_loss(rec, batch) + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"vae step {step} loss {loss.item():.5f}")


@torch.no_grad()
def encode_all(vae, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([vae.encode(x[i : i + 512]).latent_dist.mean for i in range(0, len(x), 512)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/shapes_model"))
    ap.add_argument("--n-images", type=int, default=30000)
    ap.add_argument("--vae-steps", type=int, default=500)
    ap.add_argument("--vae-batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--cosine", action="store_true", help="after warmup, decay the lr to 0 along a cosine")
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--sizes",
        type=int,
        nargs=2,
        default=[R.MIN_SIZE, R.MAX_SIZE],
        metavar=("MIN", "MAX"),
        help="side of the rendered shapes in px, inclusive (the shipped model: %(default)s)",
    )
    ap.add_argument(
        "--layers", type=int, default=ARCH["layers"], help="transformer blocks (the shipped model: %(default)s)"
    )
    ap.add_argument(
        "--heads",
        type=int,
        default=ARCH["heads"],
        help=f"attention heads of {ARCH['head_dim']} channels each (the shipped model: %(default)s)",
    )
    ap.add_argument(
        "--gap", type=int, default=R.GAP, help="px kept free between shapes (the shipped model: %(default)s)"
    )
    ap.add_argument(
        "--caption-noise",
        type=float,
        default=0.0,
        help="fraction of pairs whose image shows a one-word neighbour of the caption (the shipped model: 0)",
    )
    ap.add_argument(
        "--caption-swap",
        type=float,
        default=0.0,
        help="fraction of pairs whose image shows the caption with shapes and colours swapped in fixed "
        "pairs, prompts.SWAP (a systematic bias; the shipped model: 0)",
    )
    ap.add_argument(
        "--vae-from",
        type=Path,
        help="take the VAE (and its shift/scale) from this pipeline folder instead of training one (phase 1 skipped)",
    )
    ap.add_argument(
        "--init-from",
        type=Path,
        help="continue from this checkpoint's transformer and text encoders "
        "(a second stage: new optimizer and warmup, step numbers continue)",
    )
    ap.add_argument("--install", type=Path, help="copy this checkpoint folder into the package weights and exit")
    args = ap.parse_args()
    if args.install:
        shutil.rmtree(WEIGHTS, ignore_errors=True)
        shutil.copytree(args.install, WEIGHTS)
        print(f"installed {args.install} -> {WEIGHTS}")
        return
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    logf = open(args.out / "train.log", "a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    log(f"args {vars(args)}")
    arch = {**ARCH, "layers": args.layers, "heads": args.heads}
    pipe = tiny_sd3_pipeline(P.vocabulary(), seed=args.seed, **arch)
    t0 = time.time()
    for flag, p in (("--caption-noise", args.caption_noise), ("--caption-swap", args.caption_swap)):
        if not 0 <= p < 1:
            ap.error(f"{flag} must be in [0, 1)")
    texts, x = dataset(args.n_images, args.seed, tuple(args.sizes), args.gap, args.caption_noise, args.caption_swap)
    log(f"rendered {len(texts)} images in {time.time() - t0:.0f}s")

    cache = args.out / "vae_phase.pt"  # phase 1 is reused when the script is re-run on the same OUT
    if args.vae_from:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.vae_from / "vae")
        pipe.vae.load_state_dict(vae.state_dict())
        shift, scale = vae.config.shift_factor, vae.config.scaling_factor
        z = encode_all(pipe.vae, x)
        log(f"vae from {args.vae_from}")
    elif cache.is_file():
        state = torch.load(cache)
        pipe.vae.load_state_dict(state["vae"])
        z, shift, scale = state["latents"], state["shift"], state["scale"]
        log(f"reused {cache}")
    else:
        train_vae(pipe.vae, x, args.vae_steps, args.vae_batch, log)
        z = encode_all(pipe.vae, x)
        shift, scale = z.mean().item(), 1.0 / z.std().item()
        torch.save({"vae": pipe.vae.state_dict(), "latents": z, "shift": shift, "scale": scale}, cache)
    pipe.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    z = (z - shift) * scale
    log(f"vae done: shift {shift:.4f} scale {scale:.4f}; latents {tuple(z.shape)}")
    pipe.vae.requires_grad_(False)
    del x

    offset = 0
    if args.init_from:
        from diffusers import SD3Transformer2DModel
        from transformers import CLIPTextModelWithProjection

        pipe.transformer.load_state_dict(
            SD3Transformer2DModel.from_pretrained(args.init_from / "transformer").state_dict()
        )
        for name in ("text_encoder", "text_encoder_2"):
            getattr(pipe, name).load_state_dict(
                CLIPTextModelWithProjection.from_pretrained(args.init_from / name).state_dict()
            )
        offset = json.loads((args.init_from / "shapes_model.json").read_text())["step"]
        log(f"initialised from {args.init_from} (step {offset})")
    params = [*pipe.transformer.parameters(), *pipe.text_encoder.parameters(), *pipe.text_encoder_2.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    warm = 500

    def lr_factor(s: int) -> float:
        if s < warm or not args.cosine:
            return min(1.0, (s + 1) / warm)
        return 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, args.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    g = torch.Generator().manual_seed(args.seed + 2)
    pick = random.Random(args.seed + 3)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(z), (args.batch,), generator=g)
        caps = ["" if pick.random() < 0.1 else texts[i] for i in idx.tolist()]
        pe, _, pooled, _ = pipe.encode_prompt(
            caps, None, None, do_classifier_free_guidance=False, max_sequence_length=0
        )
        x0 = z[idx]
        eps = torch.randn(x0.shape, generator=g)
        t = torch.sigmoid(torch.randn(args.batch, generator=g))  # logit-normal(0, 1)
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * eps
        v = pipe.transformer(xt, encoder_hidden_states=pe, pooled_projections=pooled, timestep=t * 1000).sample
        loss = F.mse_loss(v, eps - x0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0:
            log(f"step {step} loss {loss.item():.4f} ({(time.time() - t0) / step:.3f}s/step)")
        if step % args.save_every == 0 or step == args.steps:
            ck = args.out / f"step_{offset + step:05d}"
            pipe.save_pretrained(ck)
            (ck / "shapes_model.json").write_text(
                json.dumps(
                    {
                        "step": offset + step,
                        "arch": arch,
                        "seed": args.seed,
                        "render": {"sizes": args.sizes, "gap": args.gap},
                        "caption_noise": args.caption_noise,
                        "caption_swap": args.caption_swap,
                        "init_from": str(args.init_from) if args.init_from else None,
                    }
                )
            )
            log(f"saved {ck}")


if __name__ == "__main__":
    main()

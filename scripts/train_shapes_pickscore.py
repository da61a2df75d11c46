"""Train the shapes world's PickScore: a small transformers ``CLIPModel`` trained from scratch, loaded by
``dgx.rewards.pickscore.PickScore`` exactly as ``yuvalkirstain/PickScore_v1`` is.

Stage 1, contrastive: scenes the world renders, passed through the shipped generator's VAE (what the generator can
draw), against their captions, with CLIP's symmetric loss; each image also competes with captions one word away
(another colour, shape, number or relation) as hard negatives. Captions that are equal to an image's own count as
neither positive nor negative.
Stage 2, preference (as PickScore was tuned from CLIP): pairs of images for one prompt, the preferred one satisfying
it more fully by the GenEval rules' partial credit; from renders (the prompt's scene against a one-word
neighbour's) and from the shipped generator's own samples on train-split prompts (pairs whose partial credit
differs). The loss is PickScore's: cross-entropy of the softmax over the two images' scores. The contrastive loss
continues beside it.

    python scripts/train_shapes_pickscore.py --out runs/shapes_pickscore          # both stages, logs to OUT/log.txt
    python scripts/train_shapes_pickscore.py --install runs/shapes_pickscore/final

The model folder holds the CLIPModel, the tokenizer and the image processor (``AutoProcessor`` reads them);
``--install`` copies it to ``packages/rewards/src/dgx/rewards/shapes/pickscore``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dgx.rewards.geneval_reward import shapes_geneval
from dgx.rewards.shapes import prompts as P
from dgx.rewards.shapes import render as R
from dgx.sampler import SD3Model
from dgx.sampler.tiny import word_tokenizer

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "packages/rewards/src/dgx/rewards/shapes/weights"
INSTALL = ROOT / "packages/rewards/src/dgx/rewards/shapes/pickscore"
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's normalisation
ARCH = {
    "text": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": 24,
    },
    "vision": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": R.SIZE,
        "patch_size": 4,
    },
    "projection_dim": 64,
}


def build(seed: int):
    """A fresh CLIPModel and its processor (tokenizer: the grammar's words; images: 32 px, CLIP's normalisation)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = word_tokenizer(P.vocabulary(), max_length=ARCH["text"]["max_position_embeddings"])
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config={
            **ARCH["text"],
            "vocab_size": len(tok.get_vocab()),
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config=ARCH["vision"],
        projection_dim=ARCH["projection_dim"],
    )
    proc = CLIPProcessor(
        CLIPImageProcessor(
            size={"shortest_edge": R.SIZE},
            crop_size={"height": R.SIZE, "width": R.SIZE},
            image_mean=list(MEAN),
            image_std=list(STD),
        ),
        tok,
    )
    return CLIPModel(cfg), proc


def pixels(uint8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> the processor's pixel values (32 px needs no resize or crop: only rescale and normalise)."""
    x = uint8.permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


@torch.no_grad()
def vae_round_trip(vae, imgs: np.ndarray, gen: torch.Generator) -> torch.Tensor:
    """Rendered uint8 NHWC scenes -> encoded (a latent sample) and decoded by the generator's VAE -> uint8 NHWC."""
    out = []
    for s in range(0, len(imgs), 512):
        x = torch.from_numpy(imgs[s : s + 512]).permute(0, 3, 1, 2).float() / 127.5 - 1
        z = vae.encode(x).latent_dist.sample(generator=gen)
        y = vae.decode(z).sample
        out.append(((y / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1))
    return torch.cat(out)


def scenes(n: int, seed: int, vae, position_share: float = 0.0) -> tuple[list[dict], torch.Tensor, list[list]]:
    """``n`` (metadata, image, drawn shapes) of the whole grammar, images rendered and VAE round-tripped; tags uniform,
    except that ``position_share`` of the scenes are position prompts (relations are the hardest words to learn)."""
    rng, pick = np.random.default_rng(seed), random.Random(seed)
    by_tag = {t: [m for m in P.all_prompts() if m["tag"] == t] for t in P.TAGS}
    metas = [
        pick.choice(by_tag["position" if pick.random() < position_share else pick.choice(P.TAGS)]) for _ in range(n)
    ]
    drawn = [R.render_prompt(m, rng) for m in metas]
    imgs = np.stack([img for img, _ in drawn])
    return metas, vae_round_trip(vae, imgs, torch.Generator().manual_seed(seed)), [shapes for _, shapes in drawn]


def false_captions(metas: list[dict], shapes: list[list], near: dict) -> list[dict[str, list[str]]]:
    """Per scene, its one-word neighbours that the scene does not satisfy (a scene of "a circle left of a square" may
    also be one of "a circle above a square": that caption is no negative), grouped by the kind of change."""
    out = []
    for m, sh in zip(metas, shapes):
        kinds: dict[str, list[str]] = {}
        for o in near[m["prompt"]]:
            if not R.satisfies(sh, o):
                kinds.setdefault(P.change_kind(m["prompt"], o["prompt"]), []).append(o["prompt"])
        out.append(kinds)
    return out


def text_features(model, proc, captions: list[str]) -> torch.Tensor:
    tx = proc.tokenizer(captions, padding=True, return_tensors="pt")
    f = model.get_text_features(input_ids=tx["input_ids"], attention_mask=tx["attention_mask"])
    f = f if isinstance(f, torch.Tensor) else f.pooler_output
    return F.normalize(f, dim=-1)


def image_features(model, uint8: torch.Tensor) -> torch.Tensor:
    f = model.get_image_features(pixel_values=pixels(uint8))
    f = f if isinstance(f, torch.Tensor) else f.pooler_output
    return F.normalize(f, dim=-1)


def contrastive_loss(
    model, proc, metas: list[dict], imgs: torch.Tensor, wrong: list[dict[str, list[str]]], k: int, pick: random.Random
):
    """CLIP's symmetric loss over the batch; image -> text also against ``k`` false one-word neighbours per image, each
    of a kind of change drawn uniformly (colour, shape, number, relation) so that rare kinds are not drowned out."""
    caps = [m["prompt"] for m in metas]
    negs = []
    for kinds in wrong:
        ns = [pick.choice(kinds[pick.choice(sorted(kinds))]) for _ in range(k)] if kinds else []
        negs.append(ns)
    uniq = sorted(set(caps) | {n for ns in negs for n in ns})
    tf = text_features(model, proc, uniq)
    idx = {c: i for i, c in enumerate(uniq)}
    img = image_features(model, imgs)
    scale = model.logit_scale.exp()
    pos = tf[[idx[c] for c in caps]]
    same = torch.tensor([[a == b for b in caps] for a in caps])
    logits = scale * img @ pos.T
    logits = logits.masked_fill(same & ~torch.eye(len(caps), dtype=torch.bool), float("-inf"))  # equal captions: skip
    neg_idx = torch.tensor([[idx[n] for n in ns] if ns else [idx[c]] * k for ns, c in zip(negs, caps)])
    hard = scale * torch.einsum("bd,bkd->bk", img, tf[neg_idx])
    hard = hard.masked_fill(torch.tensor([not ns for ns in negs])[:, None], float("-inf"))  # no false neighbour
    target = torch.arange(len(caps))
    loss_i = F.cross_entropy(torch.cat([logits, hard], 1), target)
    loss_t = F.cross_entropy(logits.T, target)
    acc = (logits.diagonal()[:, None] > hard).float()[torch.isfinite(hard)].mean()
    return (loss_i + loss_t) / 2, acc


def preference_loss(model, proc, captions: list[str], win: torch.Tensor, lose: torch.Tensor):
    """PickScore's objective: softmax over the two images' scores for the caption, the preferred one the target."""
    tf = text_features(model, proc, captions)
    scale = model.logit_scale.exp()
    s = torch.stack(
        [scale * (image_features(model, win) * tf).sum(-1), scale * (image_features(model, lose) * tf).sum(-1)], 1
    )
    return F.cross_entropy(s, torch.zeros(len(captions), dtype=torch.long)), (s[:, 0] > s[:, 1]).float().mean()


@torch.no_grad()
def generator_pairs(n_prompts: int, n_per_prompt: int, seed: int, log) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The shipped generator's ODE samples (20 steps, CFG 5, as evaluated) for ``n_prompts`` train-split prompts
    (tags in turn), scored with the GenEval rules' partial credit; returns every pair within a prompt whose credit
    differs (winner first)."""
    from dgx.eval.benchmarks import generate

    model = SD3Model.from_pretrained(GENERATOR, max_sequence_length=0)
    reward = shapes_geneval(partial=True)
    by_tag = [[m for m in P.split("train") if m["tag"] == t] for t in P.TAGS]
    for ms in by_tag:
        random.Random(seed).shuffle(ms)
    chosen = [m for group in zip(*[ms * n_prompts for ms in by_tag]) for m in group][:n_prompts]
    metas = [m for m in chosen for _ in range(n_per_prompt)]
    t0 = time.time()
    imgs = generate(
        model, [m["prompt"] for m in metas], steps=20, guidance=5.0, seed=seed, batch=128, desc="generator samples"
    )
    credit = reward(imgs, [m["prompt"] for m in metas], metas)
    u8 = (imgs.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    caps, win, lose = [], [], []
    for start in range(0, len(metas), n_per_prompt):
        for i in range(start, start + n_per_prompt):
            for j in range(start, start + n_per_prompt):
                if credit[i] > credit[j] + 1e-6:
                    caps.append(metas[i]["prompt"])
                    win.append(i)
                    lose.append(j)
    log(
        f"generator: {len(metas)} samples in {time.time() - t0:.0f} s, mean partial credit {credit.mean():.3f}, "
        f"{len(caps)} preference pairs"
    )
    return caps, u8[win], u8[lose]


def rival(
    i: int,
    wrong: list[dict],
    by_prompt: dict[str, list[int]],
    metas: list[dict],
    drawn: list[list],
    pick: random.Random,
) -> int:
    """A scene of the pool drawn for one of scene ``i``'s false neighbours that does not satisfy scene ``i``'s caption
    (the caption's render must be the preferred one); the last one tried if 20 draws find none."""
    names = [n for ns in wrong[i].values() for n in ns if n in by_prompt]
    for _ in range(20):
        j = pick.choice(by_prompt[pick.choice(names)])
        if not R.satisfies(drawn[j], metas[i]):
            break
    return j


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/shapes_pickscore"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=40000, help="rendered scenes for the contrastive stage")
    ap.add_argument("--contrastive-steps", type=int, default=3000)
    ap.add_argument("--preference-steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hard", type=int, default=4, help="one-word-neighbour captions per image")
    ap.add_argument("--sample-prompts", type=int, default=300, help="train prompts the generator samples (stage 2)")
    ap.add_argument("--samples-per-prompt", type=int, default=4, help="generator samples per prompt (stage 2)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--position-share", type=float, default=0.0, help="share of scenes from position prompts (else tags uniform)"
    )
    ap.add_argument("--init-from", type=Path, help="continue from this model folder instead of a fresh CLIPModel")
    ap.add_argument("--install", type=Path, help="copy this model folder into the package and exit")
    a = ap.parse_args()
    if a.install:
        shutil.rmtree(INSTALL, ignore_errors=True)
        shutil.copytree(a.install, INSTALL)
        print(f"installed {a.install} -> {INSTALL}")
        return

    torch.manual_seed(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    logf = (a.out / "log.txt").open("a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    log(f"args {json.dumps({k: str(v) for k, v in vars(a).items()})}")
    vae = SD3Model.from_pretrained(GENERATOR, max_sequence_length=0).vae
    t0 = time.time()
    metas, imgs, drawn = scenes(a.scenes, a.seed, vae, a.position_share)
    near = P.one_word_neighbours(P.all_prompts())
    wrong = false_captions(metas, drawn, near)
    log(f"{len(metas)} scenes rendered and VAE round-tripped in {time.time() - t0:.0f} s")
    model, proc = build(a.seed)
    if a.init_from:
        from transformers import CLIPModel

        model = CLIPModel.from_pretrained(a.init_from)
        log(f"initialised from {a.init_from}")
    log(f"CLIPModel with {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    pick = random.Random(a.seed)
    steps = a.contrastive_steps + a.preference_steps
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps, pct_start=0.05)
    pairs = None
    g = torch.Generator().manual_seed(a.seed)
    for step in range(steps):
        if step == a.contrastive_steps:
            model.save_pretrained(a.out / "contrastive")
            proc.save_pretrained(a.out / "contrastive")
            pairs = generator_pairs(a.sample_prompts, a.samples_per_prompt, a.seed + 1, log)
            by_prompt: dict[str, list[int]] = {}
            for i, m in enumerate(metas):
                by_prompt.setdefault(m["prompt"], []).append(i)
            # scenes with a false neighbour that has scenes in the pool (the rival is drawn when a pair is made)
            rivals = [i for i in range(len(metas)) if any(n in by_prompt for ns in wrong[i].values() for n in ns)]
        b = torch.randint(len(metas), (a.batch,), generator=g).tolist()
        loss, acc = contrastive_loss(model, proc, [metas[i] for i in b], imgs[b], [wrong[i] for i in b], a.hard, pick)
        msg = f"step {step} contrastive {loss.item():.3f} hard-negative acc {acc.item():.3f}"
        if pairs is not None:
            caps, win, lose = pairs
            pb = torch.randint(len(caps), (a.batch // 2,), generator=g).tolist()
            # render pairs: the prompt's scene against a one-word neighbour's scene, both from the pool
            rb = [rivals[i] for i in torch.randint(len(rivals), (a.batch // 2,), generator=g).tolist()]
            rcaps = [metas[i]["prompt"] for i in rb]
            rwin = imgs[rb]
            rlose = imgs[[rival(i, wrong, by_prompt, metas, drawn, pick) for i in rb]]
            ploss, pacc = preference_loss(
                model, proc, [caps[i] for i in pb] + rcaps, torch.cat([win[pb], rwin]), torch.cat([lose[pb], rlose])
            )
            loss = loss + ploss
            msg += f" preference {ploss.item():.3f} acc {pacc.item():.3f}"
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # CLIP's cap: scale <= 100
        if step % 50 == 0 or step == steps - 1:
            log(msg + f" scale {model.logit_scale.exp().item():.1f} lr {sched.get_last_lr()[0]:.2e}")
    model.save_pretrained(a.out / "final")
    proc.save_pretrained(a.out / "final")
    log(f"saved {a.out / 'final'} after {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Measure the shapes world's PickScore, loaded through ``dgx.rewards.pickscore.PickScore`` as a run loads it.

1. Hard negatives: held-out renders (a seed training never used) after the generator's VAE round trip, each scored
   with its true caption and with every caption one word away that the scene does not satisfy (a scene drawn for
   "A left of B" may also be one of "A above B"); the fraction of pairs where the true caption scores higher,
   overall, per tag and per kind of change (colour, shape, number, relation).
2. Separation: the shipped generator's samples on the test split, drawn as `dgx run` evaluates (ODE, 20 steps,
   CFG 5, 4 images per prompt and at least 128 per tag); ROC AUC of the score for strict-GenEval-correct against
   incorrect images, per tag.

    python scripts/eval_shapes_pickscore.py [--model FOLDER] [--out docs/shapes_pickscore]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from dgx.eval.benchmarks import generate, images_by_tag
from dgx.rewards.geneval_reward import shapes_geneval
from dgx.rewards.pickscore import PickScore
from dgx.rewards.shapes import prompts as P
from dgx.rewards.shapes import render as R
from dgx.sampler import SD3Model

GENERATOR = resources.files("dgx.rewards.shapes").joinpath("weights")


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC: the probability that a positive outscores a negative (ties count half)."""
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(resources.files("dgx.rewards.shapes").joinpath("pickscore")))
    ap.add_argument("--out", type=Path, default=Path("docs/shapes_pickscore"))
    ap.add_argument("--scenes", type=int, default=3000, help="held-out renders (tags uniform)")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--renders-only", action="store_true", help="only part 1 (a quick check; writes nothing)")
    a = ap.parse_args()
    t0 = time.time()
    ps = PickScore(path=a.model, processor_path=a.model)
    gen = SD3Model.from_pretrained(str(GENERATOR), max_sequence_length=0)

    # 1. held-out renders against one-word neighbours
    rng, pick = np.random.default_rng(a.seed), random.Random(a.seed)
    by_tag = {t: [m for m in P.all_prompts() if m["tag"] == t] for t in P.TAGS}
    near = P.one_word_neighbours(P.all_prompts())
    metas = [pick.choice(by_tag[pick.choice(P.TAGS)]) for _ in range(a.scenes)]
    drawn = [R.render_prompt(m, rng) for m in metas]
    with torch.no_grad():
        x = torch.from_numpy(np.stack([img for img, _ in drawn])).permute(0, 3, 1, 2).float() / 127.5 - 1
        imgs = torch.cat(
            [
                (
                    gen.vae.decode(
                        gen.vae.encode(x[s : s + 256]).latent_dist.sample(
                            generator=torch.Generator().manual_seed(a.seed + s)
                        )
                    ).sample
                    / 2
                    + 0.5
                ).clamp(0, 1)
                for s in range(0, len(x), 256)
            ]
        )
    true = ps(imgs, [m["prompt"] for m in metas])
    # every image x each caption one word away that its scene does not satisfy
    pairs = [
        (i, o["prompt"])
        for i, (m, (_, sh)) in enumerate(zip(metas, drawn))
        for o in near[m["prompt"]]
        if not R.satisfies(sh, o)
    ]
    wrong = ps(imgs[[i for i, _ in pairs]], [o for _, o in pairs])
    rows = [
        {"tag": metas[i]["tag"], "kind": P.change_kind(metas[i]["prompt"], o), "win": bool(true[i] > v)}
        for (i, o), v in zip(pairs, wrong)
    ]
    overall = float(np.mean([r["win"] for r in rows]))
    per_tag = {t: float(np.mean([r["win"] for r in rows if r["tag"] == t])) for t in P.TAGS}
    kinds = sorted({r["kind"] for r in rows})
    per_kind = {k: float(np.mean([r["win"] for r in rows if r["kind"] == k])) for k in kinds}
    cells = {(t, k): [r["win"] for r in rows if r["tag"] == t and r["kind"] == k] for t in P.TAGS for k in kinds}
    print(
        f"hard negatives: {overall:.3f} of {len(rows)} pairs ({time.time() - t0:.0f} s); per tag "
        + ", ".join(f"{t} {v:.3f}" for t, v in per_tag.items())
        + "; per kind "
        + ", ".join(f"{k} {v:.3f}" for k, v in per_kind.items())
    )
    if a.renders_only:
        return

    # 2. the generator's test samples: correct vs incorrect by the strict rules
    test = images_by_tag(P.split("test"), 4, 128)
    samples = generate(
        gen, [m["prompt"] for m in test], steps=20, guidance=5.0, seed=12345, batch=128, desc="test samples"
    )
    verdicts = shapes_geneval(partial=False).verdicts(samples, test)
    scores = ps(samples, [m["prompt"] for m in test]).numpy()
    correct = np.array([v.correct for v in verdicts])
    tags = np.array([m["tag"] for m in test])
    aucs = {t: auc(scores[(tags == t) & correct], scores[(tags == t) & ~correct]) for t in P.TAGS}
    counts = {t: (int(((tags == t) & correct).sum()), int(((tags == t) & ~correct).sum())) for t in P.TAGS}
    all_auc = auc(scores[correct], scores[~correct])
    print(f"separation: AUC {all_auc:.3f} over {len(test)} test samples ({time.time() - t0:.0f} s)")

    a.out.mkdir(parents=True, exist_ok=True)
    result = {
        "model": a.model,
        "scenes": a.scenes,
        "seed": a.seed,
        "pairs": len(rows),
        "hard_negative_accuracy": overall,
        "per_tag": per_tag,
        "per_kind": per_kind,
        "per_tag_kind": {f"{t}/{k}": float(np.mean(v)) for (t, k), v in cells.items() if v},
        "test_samples": len(test),
        "auc": all_auc,
        "auc_per_tag": aucs,
        "correct_incorrect_per_tag": counts,
        "seconds": round(time.time() - t0),
    }
    (a.out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["| tag | pairs | true caption wins | " + " | ".join(kinds) + " |", "|---|---|---|" + "---|" * len(kinds)]
    for t in P.TAGS:
        n = sum(r["tag"] == t for r in rows)
        md.append(
            f"| {t} | {n} | {per_tag[t]:.3f} | "
            + " | ".join(f"{np.mean(cells[(t, k)]):.3f}" if cells[(t, k)] else "" for k in kinds)
            + " |"
        )
    md.append(
        f"| **all** | {len(rows)} | **{overall:.3f}** | " + " | ".join(f"{per_kind[k]:.3f}" for k in kinds) + " |"
    )
    md += ["", "| tag | correct | incorrect | ROC AUC |", "|---|---|---|---|"]
    md += [f"| {t} | {counts[t][0]} | {counts[t][1]} | {aucs[t]:.3f} |" for t in P.TAGS]
    md.append(f"| **all** | {int(correct.sum())} | {int((~correct).sum())} | **{all_auc:.3f}** |")
    (a.out / "quality.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

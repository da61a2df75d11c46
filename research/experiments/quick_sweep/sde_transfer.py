"""Pair the per-image records of sde_transfer.sh: each adapter minus the base model, and DenseGRPO minus Flow-GRPO of
the same seed, per sampler; strict and partial credit, mean over tags (± SE from the tags' paired SEs).

    python research/experiments/quick_sweep/sde_transfer.py runs/sde_transfer/records
"""

import json
import sys
from pathlib import Path

import numpy as np
from dgx.eval.tables import paired_gain


def load(path: Path) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for r in map(json.loads, path.read_text().splitlines()):
        by.setdefault(r["sampler"], []).append(r)
    return by


folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sde_transfer/records")
models = {p.stem: load(p) for p in sorted(folder.glob("*.jsonl"))}
base = models.pop("base")
pairs = [("base", n) for n in models]
pairs += [
    (n, n.replace("flow", "dense_uni"))
    for n in models
    if n.startswith("flow") and n.replace("flow", "dense_uni") in models
]
kinds: dict[tuple[str, str], list[tuple[float, float]]] = {}  # (pair kind, sampler) -> per-seed (strict, partial)
print("| pair | sampler | strict gain | partial-credit gain |\n|---|---|---|---|")
for a, b in pairs:
    for sampler in base:
        ra = base[sampler] if a == "base" else models[a][sampler]
        (s, se), (p, pe) = (paired_gain(ra, models[b][sampler], key)["overall"] for key in ("correct", "partial"))
        print(f"| {b} - {a} | {sampler} | {s:+.3f} ± {se:.3f} | {p:+.3f} ± {pe:.3f} |")
        kinds.setdefault((f"{b.rsplit('_s', 1)[0]} - {a.rsplit('_s', 1)[0]}", sampler), []).append((s, p))
print("\nMean over seeds (± SE from the spread between seeds):\n")
print("| pair | sampler | seeds | strict gain | partial-credit gain |\n|---|---|---|---|---|")
for (kind, sampler), v in kinds.items():
    x = np.array(v)
    se = x.std(0, ddof=1) / np.sqrt(len(x)) if len(x) > 1 else np.full(2, np.nan)
    print(
        f"| {kind} | {sampler} | {len(x)} | {x[:, 0].mean():+.3f} ± {se[0]:.3f} | {x[:, 1].mean():+.3f} ± {se[1]:.3f} |"
    )

"""Result tables: rows = methods, columns = metrics, mean +/- std over seeds (Markdown + CSV)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def aggregate(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """method -> metric -> (mean, std, n) over the per-seed dicts (population std, ddof = 0)."""
    out = {}
    for method, runs in results.items():
        keys = [k for k in runs[0] if all(isinstance(r.get(k), (int, float)) for r in runs)]
        out[method] = {
            k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs])), len(runs)) for k in keys
        }
    return out


def write_tables(
    results: dict[str, list[dict[str, float]]], out_stem: Path, columns: list[str] | None = None, digits: int = 3
) -> str:
    """Write ``out_stem``.md and .csv; return the Markdown."""
    agg = aggregate(results)
    cols = columns or list(dict.fromkeys(k for m in agg.values() for k in m))
    md = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for method, m in agg.items():
        cells = []
        for c in cols:
            if c not in m:
                cells.append("")
            else:
                mean, std, n = m[c]
                cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}")
        md.append(f"| {method} | " + " | ".join(cells) + " |")
    text = "\n".join(md) + "\n"
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    out_stem.with_suffix(".md").write_text(text)
    with open(out_stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method"] + [x for c in cols for x in (f"{c}_mean", f"{c}_std")] + ["seeds"])
        for method, m in agg.items():
            n = max((v[2] for v in m.values()), default=0)
            w.writerow([method] + [x for c in cols for x in (m.get(c, ("", ""))[:2])] + [n])
    return text

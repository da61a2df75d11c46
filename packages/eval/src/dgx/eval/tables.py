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
    csv_rows = [
        [method] + [x for c in cols for x in (m.get(c, ("", ""))[:2])] + [max((v[2] for v in m.values()), default=0)]
        for method, m in agg.items()
    ]
    return _write(out_stem, md, ["method"] + [x for c in cols for x in (f"{c}_mean", f"{c}_std")] + ["seeds"], csv_rows)


def _write(out_stem: Path, md: list[str], csv_header: list[str], csv_rows: list[list]) -> str:
    """Write ``out_stem``.md (the Markdown lines) and .csv; return the Markdown."""
    text = "\n".join(md) + "\n"
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    out_stem.with_suffix(".md").write_text(text)
    with open(out_stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(csv_header)
        w.writerows(csv_rows)
    return text


def pool(estimates: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean of independent (estimate, standard error) pairs and its SE: sqrt(sum SE^2) / n."""
    return (float(np.mean([g for g, _ in estimates])), float(np.sqrt(sum(s**2 for _, s in estimates)) / len(estimates)))


def paired_gain(base: list[dict], other: list[dict], key: str = "correct") -> dict[str, tuple[float, float]]:
    """Gain of ``other`` over ``base`` from GenEval-style per-image records of the same images (record i
    of both: same prompt, same initial noise): per tag, mean(key_other - key_base) and its standard
    error (``key``: the strict verdict "correct", or a score such as "partial"); ``overall`` = mean over
    tags, SE = sqrt(sum of the tags' SE^2) / number of tags. Pairing removes the prompt-and-noise luck
    that both models share."""
    if len(base) != len(other) or any(a["prompt"] != b["prompt"] for a, b in zip(base, other)):
        raise ValueError("paired_gain: the two evaluations are not of the same images (prompts differ)")
    by_tag: dict[str, list[float]] = {}
    for a, b in zip(base, other):
        by_tag.setdefault(a["tag"], []).append(float(b[key]) - float(a[key]))
    out = {
        t: (float(np.mean(d)), float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0)
        for t, d in by_tag.items()
    }
    out["overall"] = pool(list(out.values()))
    return out


def paired_mean(base: list[dict], other: list[dict], key: str) -> tuple[float, float]:
    """mean(other[key] - base[key]) over the same images (record i of both: same prompt and initial noise) and
    its standard error: the gain of a score such as a preference model's, all images weighted alike."""
    if len(base) != len(other) or any(a["prompt"] != b["prompt"] for a, b in zip(base, other)):
        raise ValueError("paired_mean: the two evaluations are not of the same images (prompts differ)")
    d = np.array([float(b[key]) - float(a[key]) for a, b in zip(base, other)])
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def write_gain_table(
    gains: dict[str, list[dict[str, tuple[float, float]]]], out_stem: Path, columns: list[str], digits: int = 3
) -> str:
    """Markdown + CSV of paired gains, method -> one ``paired_gain`` per seed; several seeds are pooled
    (mean gain, SE = sqrt(sum SE^2) / seeds). Returns the Markdown."""
    pooled = {m: {c: pool([s[c] for s in seeds]) for c in columns} for m, seeds in gains.items() if seeds}
    md = ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    md += [
        f"| {m} | " + " | ".join(f"{g:+.{digits}f} ± {s:.{digits}f}" for g, s in row.values()) + " |"
        for m, row in pooled.items()
    ]
    csv_rows = [[m] + [x for g, s in row.values() for x in (g, s)] + [len(gains[m])] for m, row in pooled.items()]
    return _write(
        out_stem, md, ["method"] + [x for c in columns for x in (f"{c}_gain", f"{c}_se")] + ["seeds"], csv_rows
    )

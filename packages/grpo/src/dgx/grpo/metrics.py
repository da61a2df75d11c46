"""Metrics by stable names to JSONL (everything), CSV (scalars) and experiment trackers (accelerate's tracker API:
TensorBoard by default, wandb, mlflow and the others accelerate supports)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
from dgx.grpo.folders import jsonl_rows

CONSTANT_LISTS = ("grid",)  # logged in JSONL only: the same every iteration
TRACKER_PACKAGES = {  # accelerate's tracker name -> the package it needs
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "comet_ml": "comet_ml",
    "aim": "aim",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
}


def missing_tracker(name: str) -> str | None:
    """Why tracker ``name`` cannot log here (unknown, or its package is not installed), or None."""
    if name not in TRACKER_PACKAGES:
        return f"unknown tracker {name!r} (accelerate's: {', '.join(TRACKER_PACKAGES)})"
    if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
        return f"tracker {name!r} needs its package: pip install {TRACKER_PACKAGES[name]}"
    return None


def make_trackers(names: list[str], run_dir: Path, run_name: str) -> list:
    """accelerate trackers for one run, writing into ``run_dir``: TensorBoard to ``run_dir/tensorboard``, wandb to
    ``run_dir/wandb`` (project "dgx", run ``run_name``; a resumed run continues the same wandb run; offline with
    WANDB_MODE=offline), mlflow to ``run_dir/mlruns``; the others with their defaults."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    out = []
    for name in names:
        cls = LOGGER_TYPE_TO_CLASS[name]
        if name == "tensorboard":
            out.append(cls("tensorboard", logging_dir=str(run_dir)))
        elif name == "wandb":
            run_id = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
            out.append(cls("dgx", dir=str(run_dir), name=run_name, id=run_id, resume="allow"))
        elif name == "mlflow":
            out.append(cls(experiment_name="dgx", logging_dir=str(run_dir / "mlruns"), run_name=run_name))
        else:
            out.append(cls(run_name))
    return out


def flat_scalars(row: dict) -> dict[str, float]:
    """A metrics row as tracker scalars: numbers as they are, per-step lists as ``KEY/step_NN`` (not ``grid``)."""
    out: dict[str, float] = {}
    for k, v in row.items():
        if k == "iteration":
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
        elif isinstance(v, list) and k not in CONSTANT_LISTS:  # per-step statistics: one curve per step
            out.update({f"{k}/step_{i:02d}": x for i, x in enumerate(v) if isinstance(x, (int, float))})
    return out


class MetricsLog:
    """Rows of one run: every key to ``metrics.jsonl`` (or ``name.jsonl``), scalars to its CSV, and scalars and
    per-step lists to the ``trackers`` (accelerate ``GeneralTracker`` objects, started here); ``resume_after``
    keeps the rows of iterations up to it (those before a damaged line, with a warning)."""

    def __init__(
        self,
        run_dir: Path,
        resume_after: int | None = None,
        trackers: list = (),
        config: dict | None = None,
        name: str = "metrics",
    ):
        self.jsonl, self.csv = run_dir / f"{name}.jsonl", run_dir / f"{name}.csv"
        rows = jsonl_rows(self.jsonl)  # up to the last whole line: a killed run may leave one half-written
        keep = -1 if resume_after is None else resume_after
        self.rows = [r for r in rows if isinstance(r.get("iteration"), int) and r["iteration"] <= keep]
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        self._rewrite_csv()
        self.trackers = list(trackers)
        for t in self.trackers:
            t.start()
            if config is not None:
                t.store_init_configuration(config)

    def log(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._rewrite_csv()
        self.track(flat_scalars(row), row["iteration"])

    def track(self, values: dict[str, float], step: int) -> None:
        """Scalars to every tracker (not to the files)."""
        for t in self.trackers:
            t.log(values, step=step)

    def log_images(self, key: str, images: np.ndarray, step: int) -> None:
        """``images`` (uint8 NHWC) to every tracker that takes images."""
        for t in self.trackers:
            if t.name == "tensorboard":
                t.log_images({key: images}, step=step, dataformats="NHWC")
            elif hasattr(t, "log_images"):
                t.log_images({key: list(images)}, step=step)

    def _rewrite_csv(self) -> None:
        if not self.rows:
            return
        keys = list(dict.fromkeys(k for r in self.rows for k, v in r.items() if isinstance(v, (int, float, str))))
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def close(self) -> None:
        for t in self.trackers:
            t.finish()

"""Metrics by stable names to JSONL (everything), CSV (scalars) and TensorBoard."""

from __future__ import annotations

import csv
import json
from pathlib import Path

CONSTANT_LISTS = ("grid",)  # logged in JSONL only: the same every iteration


class MetricsLog:
    """Rows of one run: every key to ``metrics.jsonl``, scalars to ``metrics.csv``, scalars and per-step lists
    (as ``KEY/step_NN``) to TensorBoard; ``resume_after`` keeps the rows of iterations up to it."""

    def __init__(self, run_dir: Path, resume_after: int | None = None, tensorboard: bool = True):
        self.jsonl, self.csv = run_dir / "metrics.jsonl", run_dir / "metrics.csv"
        rows = [json.loads(ln) for ln in self.jsonl.read_text().splitlines()] if self.jsonl.is_file() else []
        keep = [r for r in rows if resume_after is not None and r["iteration"] <= resume_after]
        self.rows = keep
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in keep))
        self._rewrite_csv()
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._rewrite_csv()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "iteration":
                    self.tb.add_scalar(k, v, row["iteration"])
                elif isinstance(v, list) and k not in CONSTANT_LISTS:  # per-step statistics: one curve per step
                    for i, x in enumerate(v):
                        self.tb.add_scalar(f"{k}/step_{i:02d}", x, row["iteration"])
            self.tb.flush()

    def _rewrite_csv(self) -> None:
        if not self.rows:
            return
        keys = [k for k, v in self.rows[0].items() if isinstance(v, (int, float, str))]
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

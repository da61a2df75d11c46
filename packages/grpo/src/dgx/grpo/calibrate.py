"""Exploration-space calibration, DenseGRPO Algorithm 1 (docs/method.md, section 5).

    psi(t) <- init
    repeat K times:
        sample N trajectories with sigma_t = psi(t); dense rewards dR_t^i (dense_gain)
        for every step t:  psi(t) += eps2  if |#(dR_t > 0) - #(dR_t < 0)| < eps1   (balanced: explore more)
                           psi(t) -= eps2  otherwise                              (imbalanced: explore less)
                           (next_psi)

The result is written to psi.json (read by the ``calibrated`` noise schedule) with the
per-iteration history, and for the calibrated and the uniform a = 0.7 schedules, measured
on the same fresh samples, the imbalance and the share of samples whose step changed the
reward (dR != 0); psi.png plots them.

With a reward of few values (GenEval, OCR) most dR can be exactly 0, and a step where none
changed counts as balanced (0 = 0): psi(t) there grows by eps2 every iteration whatever it
does. Such "silent" steps are listed in psi.json and warned about; more samples per
iteration (``calibrate.prompts``) give the rule something to balance, and ``calibrate.silent:
hold`` (our option, not the paper's) leaves psi(t) unchanged in an iteration where nothing changed.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from dgx.grpo.assembly import Assembly, assemble
from dgx.grpo.checkpoint import write_text_atomic
from dgx.grpo.config import RunConfig, load
from dgx.grpo.distributed import process_state, shard
from dgx.grpo.errors import ConfigError, TrainingError
from dgx.grpo.folders import held, read_json, writable_folder
from dgx.grpo.prompts import choose_prompts
from dgx.grpo.shards import is_sharded
from dgx.grpo.stopping import Stopped
from dgx.sampler import TableNoise, UniformNoise, takes_noise
from tqdm.auto import tqdm


def dense_rewards(parts: Assembly, schedule, key: int, n_prompts: int | None = None) -> torch.Tensor:
    """The run's per-step rewards (N, T) (its credit rule's signal: dR for dense_gain) of N = n_prompts (default
    calibrate.prompts) x group_size fresh SDE rollouts keyed by ``key`` with ``schedule`` (each process rolls out its
    share of the N and gets all N rows). A credit rule with one reward per trajectory is a ConfigError."""
    cfg, model, prompts = parts.cfg, parts.model, parts.prompts
    c = cfg.calibrate
    n_prompts = n_prompts or c.prompts
    pick = choose_prompts(prompts, n_prompts, np.random.default_rng([cfg.seed, key]), cfg.train.prompt_sampling)
    all_metas = [prompts[i] for i in pick for _ in range(c.group_size)]
    split = shard(cfg)
    if is_sharded(model.transformer) and len(all_metas) % split.count:  # the continuations' forward passes must pair up
        raise ConfigError(
            f"calibrate.prompts x group_size = {len(all_metas)} must divide over {split.count} processes "
            "when the transformer is sharded (full fine-tuning under FSDP2)"
        )
    mine = split.part(len(all_metas))
    metas = [all_metas[s] for s in mine]
    traj = parts.rollouts(model, [m["prompt"] for m in metas], schedule, key, mine)
    credit = parts.credit(model, traj, parts.reward, metas)
    if not credit.per_step:
        raise ConfigError(
            f"calibration balances per-step rewards, and the credit rule {cfg.credit.name!r} gives one reward per "
            "trajectory: calibrate with a per-step rule (credit: {name: dense_gain, ode_steps: t})"
        )
    dr = credit.signal
    return torch.cat(split.gather([dr.cpu()]))


def imbalance(dr: torch.Tensor) -> list[float]:
    """Per step |#(dR > 0) - #(dR < 0)| / N."""
    return (((dr > 0).sum(0) - (dr < 0).sum(0)).abs().float() / dr.shape[0]).tolist()


def changed(dr: torch.Tensor) -> list[float]:
    """Per step the share of samples whose step changed the reward, #(dR != 0) / N."""
    return (dr != 0).float().mean(0).tolist()


def silent_steps(history: list[dict]) -> list[int]:
    """Steps where no dense reward changed in any calibration iteration (#pos = #neg = 0 throughout)."""
    return (
        [t for t in range(len(history[0]["pos"])) if all(h["pos"][t] + h["neg"][t] == 0 for h in history)]
        if history
        else []
    )


def next_psi(
    psi: np.ndarray, pos: np.ndarray, neg: np.ndarray, eps1: float, eps2: float, silent: str = "explore"
) -> np.ndarray:
    """Algorithm 1's update: psi(t) + eps2 where |#pos - #neg| < eps1 (balanced), else psi(t) - eps2; >= 0.
    ``silent="hold"``: psi(t) unchanged where no dense reward changed (#pos = #neg = 0)."""
    step = np.where(np.abs(pos - neg) < eps1, eps2, -eps2)
    if silent == "hold":
        step = np.where(pos + neg == 0, 0.0, step)
    return (psi + step).clip(min=0.0)


def _fingerprint(cfg: RunConfig) -> dict:
    """What the calibration's samples depend on (not how many iterations it runs, nor the final check's size)."""
    d = cfg.model_dump(mode="json")
    d["calibrate"] = {k: v for k, v in d["calibrate"].items() if k not in ("iterations", "check_prompts")}
    d["train"] = {"prompt_sampling": d["train"]["prompt_sampling"]}
    d.pop("eval")
    return d


def calibrate(parts: Assembly, out_dir: Path, resume: bool = False) -> Path:
    """Run Algorithm 1 with the run's components (``parts``, its generator without an adapter) and write
    ``out_dir/psi.json`` and ``out_dir/psi.png``.

    Every iteration is saved to ``out_dir/progress.json``; with ``resume`` a call with the same
    settings continues from it (a killed calibration, or more iterations), with the same result as
    one uninterrupted call, since every sample is keyed by (seed, iteration, index). Under several
    processes each rolls out its share of the samples, all compute the same psi(t), the main process
    writes the files and the others wait for psi.json.
    """
    cfg = parts.cfg
    state = process_state(cfg)
    c, T = cfg.calibrate, cfg.sampler.steps
    if not takes_noise(parts.step):
        raise ConfigError(
            f"calibration needs a stochastic sampler; {cfg.sampler.name!r} draws no noise (use sde or cps)"
        )
    grid = parts.model.grid(T)
    if c.init == "uniform":
        init = UniformNoise()(torch.arange(T), grid).tolist()
    else:
        init = [float(c.init)] * T if isinstance(c.init, (int, float)) else [float(v) for v in c.init]
    if len(init) != T:
        raise ConfigError(f"calibrate.init has {len(init)} values but sampler.steps is {T}")
    out_dir.mkdir(parents=True, exist_ok=True)
    progress, fingerprint = out_dir / "progress.json", _fingerprint(cfg)
    saved = (read_json(progress, "the calibration starts over") if resume else None) or {}
    history = saved["history"][: c.iterations] if saved.get("fingerprint") == fingerprint else []
    seconds = saved.get("seconds", [])[: len(history)] if history else []  # each iteration's, for the cost tables
    psi = np.array(init)
    if history:  # each entry holds the psi it sampled with: the next one follows from the last
        last = history[-1]
        psi = next_psi(np.array(last["psi"]), np.array(last["pos"]), np.array(last["neg"]), c.eps1, c.eps2, c.silent)
    for k in tqdm(
        range(len(history), c.iterations),
        desc="calibrate",
        initial=len(history),
        total=c.iterations,
        disable=not state.is_main_process,
    ):
        t0 = time.perf_counter()
        dr = dense_rewards(parts, TableNoise(tuple(psi)), 100_000 + k)
        if not torch.isfinite(dr).all():  # NaN compares false both ways: it would pass for "balanced"
            raise TrainingError(
                f"calibration iteration {k}: reward {cfg.reward.name!r} gave non-finite dense rewards at steps "
                f"{sorted(set(torch.nonzero(~torch.isfinite(dr))[:, 1].tolist()))}; no psi.json is written"
            )
        pos, neg = (dr > 0).sum(0).numpy(), (dr < 0).sum(0).numpy()
        history.append({"psi": psi.tolist(), "pos": pos.tolist(), "neg": neg.tolist()})
        seconds.append(time.perf_counter() - t0)
        if state.is_main_process:
            write_text_atomic(
                progress, json.dumps({"fingerprint": fingerprint, "history": history, "seconds": seconds})
            )
        psi = next_psi(psi, pos, neg, c.eps1, c.eps2, c.silent)
    balance, moved = balance_check(parts, psi)
    silent = silent_steps(history)
    if silent and state.is_main_process:
        warn_silent(cfg, history, silent, moved["calibrated"])
    path, tmp = out_dir / "psi.json", out_dir / "psi.json.tmp"
    if state.is_main_process:
        TableNoise(tuple(psi.tolist())).to_json(
            tmp,
            grid.tolist(),
            uniform_sigma=UniformNoise(0.7)(torch.arange(T), grid).tolist(),
            imbalance=balance,
            changed=moved,
            silent_steps=silent,
            history=history,
            seconds=seconds,
            config=c.model_dump(),
            fingerprint=fingerprint,
        )
        os.replace(tmp, path)  # a half-written psi.json would pass for a finished calibration on --resume
        from dgx.eval.plots import plot_psi

        plot_psi(path, out_dir / "psi.png")
    state.wait_for_everyone()
    return path


def balance_check(parts: Assembly, psi: np.ndarray) -> tuple[dict, dict]:
    """The calibrated psi(t) against the uniform a = 0.7 schedule on the same fresh samples: each one's imbalance
    per step (and its mean), and the share of samples whose step changed the reward."""
    fresh, n = 200_000, parts.cfg.calibrate.check_prompts
    dr = {"calibrated": dense_rewards(parts, TableNoise(tuple(psi)), fresh, n)}
    dr["uniform_a0.7"] = dense_rewards(parts, UniformNoise(0.7), fresh, n)
    balance = {k: imbalance(v) for k, v in dr.items()}
    balance |= {f"{k}_mean": float(np.mean(v)) for k, v in list(balance.items())}
    return balance, {k: changed(v) for k, v in dr.items()}


def warn_silent(cfg: RunConfig, history: list[dict], silent: list[int], changed_cal: list[float]) -> None:
    """Say where no dense reward changed in any iteration, what psi(t) did there, and what gives Algorithm 1 more
    to balance."""
    c = cfg.calibrate
    if c.silent == "explore":
        what = f"0 = 0 counts as balanced, so psi(t) there only grew (by {len(history) * c.eps2:g})"
        hint = ", or calibrate.silent: hold to leave them alone."
    else:
        what, hint = "psi(t) there kept its initial value (calibrate.silent: hold)", "."
    warnings.warn(
        f"calibration: at steps {silent} no dense reward changed in any of {len(history)} iterations of "
        f"{c.prompts * c.group_size} samples, and {what}; with it, "
        f"{[round(changed_cal[t], 3) for t in silent]} of the final check's samples changed the reward "
        "there. A reward of few values (GenEval, OCR) needs more samples per iteration (calibrate.prompts) "
        "for Algorithm 1 to balance anything at those steps" + hint,
        stacklevel=3,
    )


def psi_matches(psi_path: Path, cfg: RunConfig) -> bool:
    """Whether ``psi_path`` exists and was calibrated with what ``cfg``'s samples depend on (a psi.json of another
    config, or of a dgx that wrote no fingerprint, is calibrated again on --resume)."""
    if not Path(psi_path).is_file():
        return False
    try:
        return json.loads(Path(psi_path).read_text()).get("fingerprint") == _fingerprint(cfg)
    except (json.JSONDecodeError, OSError):
        return False


def mean_imbalance(psi_path: Path) -> dict[str, float]:
    """The final check written to psi.json: mean imbalance of the calibrated and the uniform a = 0.7 schedules."""
    b = json.loads(Path(psi_path).read_text())["imbalance"]
    return {"calibrated": b["calibrated_mean"], "uniform_a0.7": b["uniform_a0.7_mean"]}


def calibrate_file(
    file: Path,
    variant: str | None = None,
    out: Path | None = None,
    overrides: dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """`dgx calibrate`: the variant's psi(t) into ``out`` (checked writable and held before the model loads); a
    finished calibration there is replaced only with ``overwrite``."""
    abl = load(file, overrides=overrides)
    cfg = abl.variant(variant)[1]
    out = writable_folder(out or Path("runs") / file.stem / "calibration", "--out")
    with held(out, "dgx calibrate", process_state(cfg).is_main_process):
        if (out / "psi.json").is_file() and not (resume or overwrite):
            raise ConfigError(
                f"{out} holds a finished calibration (psi.json): --resume continues it (more iterations), "
                "--overwrite replaces it, or give another --out"
            )
        try:
            return calibrate(assemble(cfg, abl.registry()), out, resume)
        except Stopped as stop:
            done = len((read_json(out / "progress.json", "the calibration starts over") or {}).get("history", []))
            stop.where = f"after {done} of {cfg.calibrate.iterations} iterations in {out}; --resume continues"
            raise

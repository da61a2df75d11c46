"""The GRPO / DenseGRPO training recipe, readable top to bottom (docs/method.md, sections 1-5).

Each iteration: choose prompts -> G SDE rollouts per prompt (no grad) -> reward credit
(sparse, or per step through a wrapper) -> gather across processes -> advantages per
prompt group (and per timestep) -> clipped GRPO loss with KL to the reference policy
(LoRA disabled) on the recorded steps chosen by ``train.timestep_fraction``, batched into optimizer steps as
dgx.grpo.updates plans (zero-advantage samples dropped, a share of the samples per step) -> AdamW on the LoRA
parameters, its learning rate set per iteration by ``train.lr_schedule`` and ``train.lr_warmup``, and the EMA. The objective (``objective``, dgx.grpo.loss)
turns credit into advantages and gives the loss.

Every random draw is keyed by (seed, iteration, global sample index), so a sample is the
same whichever process draws it, and a resumed run repeats the uninterrupted one. Processes
run DDP or FSDP2, as accelerate is configured; checkpoints hold whole tensors either way.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from dgx.eval.benchmarks import Shard
from dgx.grpo import checkpoint, updates
from dgx.grpo.adapter import adapter_disabled, add_lora, copy_named, full, load_trained, trained_state
from dgx.grpo.assembly import Assembly
from dgx.grpo.build import build_model, build_schedule
from dgx.grpo.config import RunConfig
from dgx.grpo.distributed import check_supported
from dgx.grpo.errors import ConfigError, TrainingError
from dgx.grpo.loss import LossOutput, Recorded
from dgx.grpo.metrics import MetricsLog, flat_scalars, make_trackers
from dgx.grpo.prompts import choose_prompts
from dgx.grpo.shards import is_sharded
from dgx.sampler import sample_generator, schedule_at
from diffusers.optimization import get_scheduler
from torch.distributed.tensor import DTensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm


@dataclass
class Policy:
    """What an update changes: ``model`` (its transformer as accelerate prepared it), ``base`` (the unwrapped
    transformer with the adapter), the accelerator, optimizer, trained parameters and their EMA (or None)."""

    model: object
    base: torch.nn.Module
    acc: Accelerator
    opt: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    ema: dict[str, torch.Tensor] | None


@dataclass
class Batch:
    """What one iteration sampled and how: trajectories, advantages (B, T), the noise schedule and step of the
    rollouts, the time grid and the objective trained on."""

    traj: object
    adv: torch.Tensor
    schedule: object
    step_fn: Callable
    grid: torch.Tensor
    objective: object


@dataclass
class Run:
    """One call of ``train``: its config and components, the accelerator, the policy being trained (with its learning
    rate schedule), the rollouts' noise schedule and time grid, every process's share of the samples, the first
    iteration to run, and the logs (the main process's; None elsewhere)."""

    cfg: RunConfig
    parts: Assembly
    run_dir: Path
    acc: Accelerator
    policy: Policy
    sched: object
    schedule: object
    grid: torch.Tensor
    shares: list[range]
    start: int
    sharded: bool
    metrics: MetricsLog | None
    curve: MetricsLog | None

    @property
    def ckpts(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def mine(self) -> range:
        """This process's samples."""
        return self.shares[self.acc.process_index]


def train(
    parts: Assembly,
    run_dir: Path,
    *,
    resume: bool = False,
    accelerator: Accelerator | None = None,
    stop_after: int | None = None,
    evaluate_during: Callable | None = None,
):
    """Train the run of ``parts`` (its components, assembled once by the caller: ``assemble(cfg)``; its generator
    without an adapter: it gets this run's, which ``remove_adapter`` takes off again) into ``run_dir``. Returns the
    model with its trained adapter enabled (``finish``: sharded as it trained, or an unsharded rebuild).

    Args:
        parts: The run's components (``assemble(cfg)``).
        run_dir: The run's folder: checkpoints, metrics.
        resume: Continue from the last whole checkpoint in ``run_dir``.
        accelerator: accelerate's Accelerator (default: one for the config's device).
        stop_after: End the loop after that many iterations of this call (to test resuming).
        evaluate_during: With ``eval.every``, ``evaluate_during(model, iteration)`` returns a row of test scores and
            a uint8 NHWC grid of sample images (or None); every process calls it, the main one logs the row to
            ``eval_curve.jsonl`` and the trackers (as ``test/...``) and the images to the trackers, and keeps
            ``checkpoints/best`` by the row's ``score``.
    """
    cfg = parts.cfg
    acc = accelerator or Accelerator(cpu=cfg.device == "cpu")
    check_supported(acc.state)
    if acc.device.type == "cuda":  # gpu_peak_gib of the first row covers this call's building and sharding too
        torch.cuda.reset_peak_memory_stats(acc.device)
    run = prepare(cfg, parts, run_dir, acc, resume, evaluate_during is not None)
    tc = cfg.train
    end = tc.iterations if stop_after is None else min(tc.iterations, run.start + stop_after)
    bar = tqdm(
        range(run.start, end),
        desc=f"train {run_dir.parent.name}/{run_dir.name}",
        disable=not acc.is_main_process,
        initial=run.start,
        total=tc.iterations,
    )
    for it in bar:
        row = iteration(run, it)
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.1e}", clip=f"{row['clip_frac']:.2f}")
        if run.metrics is not None:
            run.metrics.log(row)
        if acc.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(acc.device)
        save_and_evaluate(run, it, evaluate_during)
        acc.wait_for_everyone()
    return finish(run)


def prepare(cfg: RunConfig, parts: Assembly, run_dir: Path, acc: Accelerator, resume: bool, evaluating: bool) -> Run:
    """The adapter on the generator (resumed from the last checkpoint with ``resume``), its optimizer and learning
    rate schedule, prepared by accelerate (DDP, or FSDP2 sharded in place), the EMA, this process's share of the
    samples and the logs."""
    tc = cfg.train
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    last = checkpoint.latest(run_dir / "checkpoints") if resume else None
    model = parts.model
    params = add_lora(model, cfg)
    base = model.transformer
    if last is not None:  # laid out as the weights are: whole, or this process's shards of a model built sharded
        load_trained(model, checkpoint.read_like(last, "adapter", trained_state(model)))
    if tc.gradient_checkpointing:
        base.enable_gradient_checkpointing()
    opt, sched = optimizer(tc, params)
    sharded = acc.distributed_type == DistributedType.FSDP
    if sharded and not is_sharded(base):  # a LoRA's base, sharded here (a full fine-tune's was built sharded)
        # every process has built the whole model: accelerate's rank-0 loading (on by default) has nothing to save,
        # and it fails on persistent buffers such as SD3's pos_embed
        acc.state.fsdp_plugin.cpu_ram_efficient_loading = False
        # accelerate keeps the unsharded tensors until all are sharded, which on the GPU doubled the peak memory
        # (FLUX.1-dev on one H100: 45.6 GiB, 29.5 without FSDP); sharded from the CPU, the GPU receives only shards
        base.to("cpu")
    # DDP wraps ``base``; FSDP2 shards it in place, replacing its parameters with DTensor shards
    model.transformer, opt = acc.prepare(base, opt)
    params = [p for p in base.parameters() if p.requires_grad]
    ema = {n: p.detach().clone() for n, p in base.named_parameters() if p.requires_grad} if tc.ema else None
    # a schedule that waits for a psi table raises here, saying which key to set
    schedule = parts.schedule if parts.schedule is not None else build_schedule(cfg, parts.registry, parts.psi_path)
    N, world = tc.prompts_per_iter * tc.group_size, acc.num_processes
    if N % world:
        raise ConfigError(f"train.prompts_per_iter * group_size = {N} must divide over {world} processes")
    shares = [Shard(p, world).part(N) for p in range(world)]  # split as calibration and evaluation split
    start, ema = restore(last, opt, sched, ema) if last is not None else (0, ema)
    metrics, curve = logs(cfg, run_dir, start, evaluating) if acc.is_main_process else (None, None)
    policy = Policy(model, base, acc, opt, params, ema)
    grid = model.grid(cfg.sampler.steps)
    return Run(cfg, parts, run_dir, acc, policy, sched, schedule, grid, shares, start, sharded, metrics, curve)


def restore(last: Path, opt, sched, ema: dict | None) -> tuple[int, dict | None]:
    """The optimizer, schedule and EMA state of checkpoint ``last``; returns the iteration to continue from and the
    EMA (the checkpoint's, laid out as this run's)."""
    done = checkpoint.load(last, opt, sched)
    if ema is not None:
        ema = checkpoint.read_like(last, "ema", ema) or ema
    return done + 1, ema


def optimizer(tc, params: list[torch.nn.Parameter]):
    """AdamW on the adapter and its learning rate schedule, stepped once per iteration (not prepared by accelerate,
    which would step it once per process)."""
    opt = torch.optim.AdamW(params, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    name = "constant_with_warmup" if tc.lr_schedule == "constant" and tc.lr_warmup else tc.lr_schedule
    return opt, get_scheduler(name, opt, num_warmup_steps=tc.lr_warmup, num_training_steps=tc.iterations)


def logs(cfg: RunConfig, run_dir: Path, start: int, evaluating: bool) -> tuple[MetricsLog, MetricsLog | None]:
    """The main process's metrics log (with the trackers) and, with an evaluation during training, its curve's; a
    resumed run keeps the rows before iteration ``start``."""
    trackers = make_trackers(cfg.train.log_with, run_dir, f"{run_dir.parent.name}/{run_dir.name}")
    metrics = MetricsLog(run_dir, start - 1, trackers, tracker_config(cfg))
    return metrics, MetricsLog(run_dir, start - 1, name="eval_curve") if evaluating else None


def iteration(run: Run, it: int) -> dict:
    """One GRPO iteration; returns its metrics row (the main process logs it).

    1. prompts (the same choice on every process) and this process's slice of the N samples;
    2. rollouts with the current policy, no grad;
    3. credit (sparse or per step) and advantages over the gathered global batch;
    4. the policy update on the recorded steps ``train.timestep_fraction`` selects.
    """
    cfg, parts, acc, policy = run.cfg, run.parts, run.acc, run.policy
    tc, model, G = cfg.train, policy.model, cfg.train.group_size
    sec, calls0, evaluations0, decodes0 = {}, model.calls, model.evaluations, model.decodes
    pick = choose_prompts(parts.prompts, tc.prompts_per_iter, np.random.default_rng([cfg.seed, it]), tc.prompt_sampling)
    metas = [parts.prompts[pick[s // G]] for s in run.mine]
    texts = [m["prompt"] for m in metas]

    t0 = time.perf_counter()
    schedule = schedule_at(run.schedule, it, cfg.sampler.steps, cfg.seed)  # a sliding window's place this iteration
    traj = parts.rollouts(model, texts, schedule, it, run.mine)
    sec["rollout"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    credit = parts.credit(model, traj, parts.reward, metas)
    sec["credit"] = time.perf_counter() - t0
    sec.update({f"credit_{k}": v for k, v in credit.seconds.items()})
    gather = lambda x: acc.gather(x.to(acc.device).contiguous()).cpu()  # noqa: E731
    terminal, signal, weights = gather(credit.terminal), gather(credit.signal), gather(credit.weights)
    check_finite(cfg, it, [parts.prompts[pick[s // G]]["prompt"] for s in range(len(terminal))], terminal, signal)
    latent = None if credit.latent_rewards is None else gather(credit.latent_rewards)
    kept = {n: (gather(term), gather(sig), w) for n, (term, sig, w) in (credit.parts or {}).items()}
    by_reward = {"parts": [(x, w) for _, x, w in kept.values()]} if kept else {}  # rewards kept apart, if any
    adv_all = parts.objective.advantages(signal, weights, credit.per_step, G, **by_reward)

    t0 = time.perf_counter()
    batch = Batch(traj, adv_all[run.mine.start : run.mine.stop], schedule, parts.step, run.grid, parts.objective)
    stats = update(policy, cfg, batch, adv_all, it, run.shares, acc.process_index)
    sec["train"] = time.perf_counter() - t0
    if not finite_state(acc, policy.params, policy.opt):
        last = checkpoint.latest(run.ckpts)
        raise TrainingError(
            f"iteration {it}: the adapter or its optimizer state is no longer finite after the update "
            f"(train.lr = {tc.lr:g} too large?); stopped before writing a checkpoint, "
            + (f"the last good one ({last.name}) stays for --resume" if last else "and none was written before")
        )
    lr = policy.opt.param_groups[0]["lr"]  # this iteration's
    run.sched.step()
    row = {
        "iteration": it,
        "reward_mean": terminal.mean().item(),
        "reward_std": terminal.std().item(),
        "adv_mean": adv_all.mean().item(),
        "adv_abs_mean": adv_all.abs().mean().item(),
        "lr": lr,
        "model_calls": model.calls - calls0,
        "model_evaluations": model.evaluations - evaluations0,
        "decoded_images": model.decodes - decodes0,  # each one scored by the reward
        **stats,
        **{f"seconds_{k}": v for k, v in sec.items()},
    }
    if acc.device.type == "cuda":  # the main process's peak since the previous row, or since this call started
        row["gpu_peak_gib"] = torch.cuda.max_memory_allocated(acc.device) / 2**30
    row.update({f"reward_{n}": term.mean().item() for n, (term, _, _) in kept.items()})  # each kept reward's mean
    if latent is not None:  # R_k = R(ODE_n(x_k)) along the grid, gathered
        row["latent_reward_mean"] = latent.mean(0).tolist()
        row["grid"] = run.grid.tolist()
    if credit.per_step:
        row["dense_mean"] = signal.mean(0).tolist()
        row["dense_pos"] = (signal > 0).float().mean(0).tolist()
        row["dense_neg"] = (signal < 0).float().mean(0).tolist()
    return row


def check_finite(cfg: RunConfig, it: int, prompts: list[str], terminal: torch.Tensor, signal: torch.Tensor) -> None:
    """A TrainingError naming the prompts whose reward or credit is NaN or inf (``prompts``: one per sample)."""
    bad = sorted(
        {p for s, p in enumerate(prompts) if not (torch.isfinite(signal[s]).all() and torch.isfinite(terminal[s]))}
    )
    if bad:
        raise TrainingError(
            f"iteration {it}: reward {cfg.reward.name!r} (credit {cfg.credit.name!r}) gave NaN or inf "
            f"for prompts {bad[:5]}; the last checkpoint is kept for --resume once the reward is fixed"
        )


def save_and_evaluate(run: Run, it: int, evaluate_during: Callable | None) -> None:
    """The checkpoint after iteration ``it`` (every ``train.save_every``, the last, and before an evaluation), and
    ``eval.every``'s evaluation: its row to ``eval_curve.jsonl`` and the trackers, ``checkpoints/best`` kept by it."""
    cfg, acc, policy = run.cfg, run.acc, run.policy
    tc, model = cfg.train, policy.model
    evaluating = evaluate_during is not None and ((it + 1) % cfg.eval.every == 0 or it + 1 == tc.iterations)
    saved = None
    if (it + 1) % tc.save_every == 0 or it + 1 == tc.iterations or evaluating:
        saved = checkpoint.save(
            run.ckpts,
            it,
            trained_state(model, policy.base),
            policy.opt,
            run.sched,
            policy.ema,
            run.parts.psi_path,
            keep=tc.keep_last,
            write=acc.is_main_process,
            keep_every=tc.keep_every,
            lora=getattr(policy.base, "peft_config", {}).get("default"),
            barrier=acc.wait_for_everyone,
        )
    if not evaluating:
        return
    t0 = time.perf_counter()
    wrapped, model.transformer = model.transformer, policy.base  # per-process forward passes, no DDP wrapper
    try:
        row, grid_images = evaluate_during(model, it)
    finally:
        model.transformer = wrapped
    row = {"iteration": it, **row, "seconds": time.perf_counter() - t0}
    if run.curve is not None:
        run.curve.log(row)
        run.metrics.track({f"test/{k}": v for k, v in flat_scalars(row).items()}, it)
        if grid_images is not None:
            run.metrics.log_images("test/samples", grid_images, it)
        checkpoint.keep_best(run.ckpts, saved, row["score"], row["metric"])


def finish(run: Run):
    """Close the logs, put the EMA weights in (to evaluate and export them) and hand back the generator with its
    trained adapter: a model built sharded as it is (evaluations give every process as many forward passes), a LoRA
    sharded by accelerate as an unsharded rebuild (its adapter comes off after the run, which a sharded model does
    not allow)."""
    policy, cfg = run.policy, run.cfg
    if run.metrics is not None:
        run.metrics.close()
    if policy.ema is not None:
        copy_named(policy.base, policy.ema)
    model = policy.model
    model.transformer = policy.base
    if not run.sharded or full(model):
        return model
    adapter = checkpoint.whole(trained_state(model, policy.base))
    del model, policy
    run.policy = run.sched = None  # the sharded model and its optimizer state go before the rebuild
    run.acc.free_memory()
    model = build_model(cfg, run.parts.registry, run.acc.device)
    add_lora(model, cfg)
    load_trained(model, adapter)
    return model


def tracker_config(cfg: RunConfig) -> dict:
    """The run's config as flat ``section.key`` scalars (what trackers store as hyperparameters)."""
    out = {}

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)

    walk(cfg.model_dump(mode="json"), "")
    return out


def finite_state(acc: Accelerator, params: list[torch.Tensor], opt: torch.optim.Optimizer) -> bool:
    """Whether every trained parameter and optimizer moment is finite, on every process (each checks its shards)."""

    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if isinstance(t, DTensor) else t

    tensors = [*params, *(v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim)]
    # one flag per tensor, reduced on the device: a single host sync per iteration, not one per tensor
    ok = torch.stack([torch.isfinite(local(t)).all().to(acc.device) for t in tensors]).all().float().view(1)
    return bool(acc.gather(ok).min() > 0)


# Attention kernels for the update's forward, backward and checkpoint recompute: all but cuDNN's, whose backward
# failed on an H100 for FLUX.1-dev-sized blocks (torch 2.11, "mha_graph.execute(...).is_good()").
UPDATE_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def steps_to_train(trainable: list[int], fraction: float, selection: str, generator: torch.Generator) -> list[int]:
    """The steps one sample trains on this epoch, out of its ``trainable`` (stochastic) ones: ``first``, the first
    int(fraction * n) (Flow-GRPO's ``num_train_timesteps``: 9 of 10 at 0.99), or ``random``, ceil(fraction * n)
    drawn with ``generator``; at least one either way."""
    n = len(trainable)
    if selection == "first":
        return trainable[: max(1, int(fraction * n))]
    k = max(1, math.ceil(fraction * n))
    return [trainable[j] for j in torch.randperm(n, generator=generator)[:k].tolist()]


def update(
    policy: Policy, cfg: RunConfig, batch: Batch, adv: torch.Tensor, it: int, shares: list[range], rank: int
) -> dict:
    """Inner epochs of clipped-loss updates over (sample, step) pairs of ``batch`` (this process's samples, share
    ``rank`` of ``shares``), planned by dgx.grpo.updates on the global batch's advantages ``adv``; returns stats
    averaged over the optimizer steps, and ``trained_samples``, the samples the update kept."""
    tc, traj = cfg.train, batch.traj
    trainable = [i for i in range(traj.steps) if (traj.stds[:, i] > 0).all()]  # deterministic steps carry no gradient
    if not trainable:
        raise ConfigError(
            f"sampler {cfg.sampler.name!r} made no stochastic step to train on; use sde or cps with noise > 0"
        )
    kept = list(range(len(adv)))
    if tc.zero_advantage == "drop":
        kept = updates.kept_samples(adv, tc.updates_per_epoch, updates.keep_generator(cfg.seed, it))
    sums: dict[str, float] = {}
    n_stats = 0
    for epoch in range(tc.inner_epochs):
        chosen = {
            b: steps_to_train(
                trainable, tc.timestep_fraction, tc.timestep_selection, sample_generator(cfg.seed, it, b, epoch + 1)
            )
            for b in kept
        }
        epoch_steps = updates.plan(kept, chosen, shares, rank, tc, updates.epoch_generator(cfg.seed, it, epoch))
        for u, step in enumerate(epoch_steps):
            done = (it * tc.inner_epochs + epoch) * tc.updates_per_epoch + u  # optimizer steps before this one
            before, after = updates.ema_decays(tc.ema, done) if policy.ema is not None else ([], [])
            updates.ema_update(policy.ema, trained(policy), before)  # the parameters of the step before
            with sdpa_kernel(UPDATE_SDPA_BACKENDS):
                stats = optimizer_step(policy, tc, batch, step, trainable[0])
            updates.ema_update(policy.ema, trained(policy), after)
            if stats is not None:
                sums = _accumulate(sums, stats)
                n_stats += 1
    if not n_stats:  # every advantage was zero and the filter dropped every sample: nothing trained
        sums, n_stats = (
            dict.fromkeys(("loss", "policy", "kl", "clip_frac", "approx_kl", "grad_norm", "skipped_steps"), 0.0),
            1,
        )
    return {**{k: v / n_stats for k, v in sums.items()}, "trained_samples": len(kept)}


def pair_loss(model, base: torch.nn.Module, batch: Batch, pairs: list[tuple[int, int]]) -> LossOutput:
    """The objective's loss on (sample, step) ``pairs`` under the current policy, with the reference's step means (the
    adapter of ``base`` off) where it needs them; the gradient reaches the LoRA parameters through the policy's step
    mean and log-prob."""
    traj, adv, schedule, step_fn, grid = batch.traj, batch.adv, batch.schedule, batch.step_fn, batch.grid
    objective = batch.objective
    bi, si = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    x, x_next = traj.latents[bi, si], traj.latents[bi, si + 1]
    t, t_next, sigma = grid[si], grid[si + 1], schedule(si, grid) if schedule is not None else None
    cond, detach = traj.cond.index(bi), objective.detach_uncond
    out = step_fn(x, model.velocity(x, t, cond, traj.guidance, detach_uncond=detach), t, t_next, sigma, x_next=x_next)
    ref_mean = None
    if objective.needs_reference:
        with torch.no_grad(), adapter_disabled(model, base):
            ref_mean = step_fn(x, model.velocity(x, t, cond, traj.guidance), t, t_next, sigma, x_next=x_next).mean
    old = Recorded(traj.log_probs[bi, si], traj.means[bi, si])
    return objective(out, old, adv[bi, si].to(out.log_prob.device), ref_mean)


def optimizer_step(policy: Policy, tc, batch: Batch, step: updates.Step, spare: int) -> dict | None:
    """One optimizer step on this process's pairs of ``step``, accumulated over micro-batches
    weighted so that the processes' mean is the mean over the step's pairs on all processes; the micro-batches this
    process lacks run on the pair (0, ``spare``) with weight 0. Returns this process's stats, or None where no
    process had a pair (no step taken)."""
    model, base, acc, opt, params = policy.model, policy.base, policy.acc, policy.opt, policy.params
    if not step.micro_batches:
        return None
    pairs = step.pairs
    micro = [pairs[s : s + tc.micro_batch] for s in range(0, len(pairs), tc.micro_batch)]
    micro += [[]] * (step.micro_batches - len(micro))
    sums = dict.fromkeys(("loss", "policy", "kl", "clip_frac", "approx_kl"), 0.0)
    for mi, mb in enumerate(micro):
        sync = nullcontext() if mi == len(micro) - 1 else acc.no_sync(model.transformer)
        with sync:
            lo = pair_loss(model, base, batch, mb or [(0, spare)])
            acc.backward(lo.loss * len(mb) * acc.num_processes / step.total)
        for name in sums:
            sums[name] += getattr(lo, name).item() * len(mb) / max(1, len(pairs))
    norm = acc.clip_grad_norm_(params, tc.max_grad_norm)
    sums["grad_norm"] = float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    sums["skipped_steps"] = float(not math.isfinite(sums["grad_norm"]))  # the same on every process (reduced gradients)
    if sums["skipped_steps"]:
        warnings.warn(
            "non-finite gradient norm: optimizer step skipped (see skipped_steps in the metrics)", stacklevel=2
        )
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return sums


def trained(policy: Policy) -> dict[str, torch.Tensor]:
    """The parameters the policy's EMA averages, by name (none without one)."""
    return {n: p for n, p in policy.base.named_parameters() if policy.ema is not None and n in policy.ema}


def _accumulate(total: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    return {k: total.get(k, 0.0) + v for k, v in new.items()}

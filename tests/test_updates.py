"""How an iteration's samples become optimizer steps (dgx.grpo.updates), against hand-computed cases and a
transcription of Flow-GRPO's EMA loop (scripts/train_sd3.py and flow_grpo/ema.py at ac4c86e)."""

import math

import pytest
import torch
from dgx.grpo import updates
from dgx.grpo.config import EmaConfig, RunConfig, TrainConfig


def test_zero_advantage_filter_keeps_non_zero_samples_and_tops_up_to_a_multiple():
    adv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, -2.0], [0.0, 0.0], [3.0, 3.0]])
    g = torch.Generator().manual_seed(0)
    assert updates.kept_samples(adv, 1, g) == [1, 3, 5]  # a non-zero advantage at any step keeps a sample
    two = updates.kept_samples(adv, 2, torch.Generator().manual_seed(0))
    drawn = sorted(set(two) - {1, 3, 5})
    assert len(two) == 4 and len(drawn) == 1 and drawn[0] in (0, 2, 4)
    zero = torch.tensor([0, 2, 4])
    assert drawn[0] == zero[torch.randperm(3, generator=torch.Generator().manual_seed(0))[:1]].item()
    assert updates.kept_samples(adv, 3, g) == [1, 3, 5]  # already a multiple
    assert updates.kept_samples(adv, 6, g) == list(range(6))  # three drawn back: all of them
    assert updates.kept_samples(adv[[1, 3, 5]], 4, g) == [0, 1, 2]  # too few left to draw: Flow-GRPO draws none
    assert updates.kept_samples(torch.zeros(4, 2), 3, g) == []


def test_cut_gives_exactly_the_number_of_pieces():
    assert updates.cut(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert updates.cut([1], 3) == [[1], [], []]
    assert updates.cut([], 2) == [[], []]


@pytest.mark.parametrize("split", ["samples", "steps"])
def test_every_process_plans_the_same_steps_as_one(split):
    """Processes' shares of a step are the one-process plan's pairs of their samples; each runs the micro-batches of
    the busiest one."""
    tc = TrainConfig(updates_per_epoch=3, micro_batch=4, update_split=split)
    kept = [0, 1, 2, 5, 6, 7, 8, 11]
    chosen = {b: [b % 3, 3 + b % 2] for b in kept}
    one = updates.plan(kept, chosen, [range(12)], 0, tc, torch.Generator().manual_seed(1))
    shares = [range(0, 4), range(4, 8), range(8, 12)]
    per = [updates.plan(kept, chosen, shares, r, tc, torch.Generator().manual_seed(1)) for r in range(3)]
    assert len(one) == 3 and all(len(p) == 3 for p in per)
    for u, step in enumerate(one):
        assert step.total == len(step.pairs) and all(p[u].total == step.total for p in per)
        together = sorted((b + shares[r].start, s) for r in range(3) for b, s in per[r][u].pairs)
        assert together == sorted(step.pairs)
        assert all(p[u].micro_batches == max(math.ceil(len(q[u].pairs) / 4) for q in per) for p in per)
    pairs = [p for step in one for p in step.pairs]
    assert sorted(pairs) == sorted((b, s) for b in kept for s in chosen[b])  # every pair once
    if split == "samples":  # a step holds its samples at all their steps
        for step in one:
            samples = {b for b, _ in step.pairs}
            assert sorted(step.pairs) == sorted((b, s) for b in samples for s in chosen[b])


def flow_grpo_ema(params_after: list[float], batches_per_step: int, decay=0.9, interval=8) -> list[float]:
    """train_sd3.py's loop: training batches accumulate `batches_per_step` to an optimizer step (global_step += 1
    after it); after every batch `ema.step(params, global_step)`: when (global_step + 1) % interval == 0, the EMA
    moves by (1 - min((1 + step) / (10 + step), decay)) towards the parameter. Returns the EMA after each step."""
    ema, p, global_step, out = params_after[0], params_after[0], 0, []
    for batch in range((len(params_after) - 1) * batches_per_step):
        if (batch + 1) % batches_per_step == 0:
            global_step += 1
            p = params_after[global_step]
        if (global_step + 1) % interval == 0:
            ema += (1 - min((1 + global_step) / (10 + global_step), decay)) * (p - ema)
        if (batch + 1) % batches_per_step == 0:
            out.append(ema)  # read at the step (the later batches of the step update it again)
    return out


@pytest.mark.parametrize("repeats", [1, 3])
def test_ema_schedule_equals_flow_grpo(repeats):
    params_after = [float(k) ** 0.5 for k in range(41)]  # the parameter after each of 40 optimizer steps
    want = flow_grpo_ema(params_after, repeats)
    cfg = EmaConfig(repeats=repeats)
    avg, got = {"p": torch.tensor(params_after[0], dtype=torch.float64)}, []
    for done in range(40):
        before, after = updates.ema_decays(cfg, done)
        updates.ema_update(avg, {"p": torch.tensor(params_after[done], dtype=torch.float64)}, before)
        updates.ema_update(avg, {"p": torch.tensor(params_after[done + 1], dtype=torch.float64)}, after)
        got.append(avg["p"].item())
    assert got == pytest.approx(want, rel=1e-12)
    p0, p7 = params_after[0], params_after[7]
    assert got[5] == p0  # no update in the first 6 steps
    # hand-computed: the 7th step (global_step 7) updates first, at decay min(8 / 17, 0.9); with 3 repeats the
    # other 2 come with the next step's first 2 training batches, towards the same parameters, and step 8 adds none
    assert got[6] == pytest.approx(p0 + (1 - 8 / 17) * (p7 - p0))
    assert got[7] == pytest.approx(got[6] if repeats == 1 else p7 + (8 / 17) ** 2 * (got[6] - p7))
    assert updates.ema_decay(cfg, 79) == pytest.approx(80 / 89) and updates.ema_decay(cfg, 87) == 0.9  # warmed up
    assert updates.ema_decay(cfg, 80) is None


def test_ema_config_reads_a_decay_as_flow_grpos_schedule():
    ema = RunConfig(train={"ema": 0.9}).train.ema
    assert (ema.decay, ema.every, ema.warmup, ema.repeats) == (0.9, 8, True, 1)
    constant = EmaConfig(decay=0.5, every=1, warmup=False)  # an update after every step at 0.5
    assert [updates.ema_decays(constant, n) for n in range(2)] == [([], [0.5]), ([], [0.5])]
    assert RunConfig().train.ema is None

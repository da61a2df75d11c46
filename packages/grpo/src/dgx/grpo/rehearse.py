"""`dgx rehearse`: the paper configs end to end on stand-ins of every component, timed phase by phase.

Where the weights cannot be downloaded (CI, an offline GPU box), each component of a config (by default
``sd35m_pickscore``, ``sd35m_geneval`` and ``sd35m_ocr``) is replaced by a folder of the same classes with random
weights: the model by its family's registry ``stand_in`` (SD3.5-Medium, FLUX.1-dev, Qwen-Image:
``dgx.sampler.architectures``), PickScore's CLIP ViT-H/14, GenEval's Mask2Former (Swin-S, COCO's classes) and CLIP
ViT-L/14 (``dgx.rewards.architectures``). OCR runs rapidocr's real PP-OCR models. The configs then run through ``dgx run`` unchanged but for the paths, the
prompts and the size of one iteration: the base model's evaluation, Flow-GRPO and DenseGRPO (with its calibration)
and their evaluations. ``scale="paper"`` builds the published sizes (a GPU's job); ``scale="tiny"`` the same classes
at toy widths, for the CPU.

The table (``rehearsal.md`` / ``rehearsal.json``) gives each training iteration's seconds by phase (rollout, ODE
continuation, decode, reward, update), the reward's share, the model calls and the peak memory, and, per config,
DenseGRPO's time over Flow-GRPO's beside the ratio of their model calls.
"""

from __future__ import annotations

import json
import re
import resource
import time
from pathlib import Path

import torch
from accelerate import PartialState
from dgx.grpo.errors import ConfigError

CONFIGS = ("configs/sd35m_pickscore.yaml", "configs/sd35m_geneval.yaml", "configs/sd35m_ocr.yaml")
VARIANTS = ("flow_grpo", "dense_grpo")
SCALES = ("tiny", "paper")
PICKSCORE_PROMPTS = [
    "a red bicycle leaning on a stone wall at sunset",
    "a watercolor painting of a lighthouse in a storm",
    "a cat wearing a tiny knitted hat",
    "a bowl of ramen on a wooden table, studio lighting",
]
OCR_PROMPTS = [
    'a shop sign that says "open"',
    'a poster with the word "hello"',
    'a coffee mug printed with "monday"',
    'a street sign reading "main street"',
]
# one prompt group per iteration (paper: 24 samples, one of the paper's 6 groups per iteration)
SIZES = {
    "tiny": dict(group_size=2, micro_batch=2, eval_prompts=2, dtype="float32", resolution=64, max_sequence_length=16),
    "paper": dict(group_size=24, micro_batch=8, eval_prompts=8, dtype=None, resolution=None, max_sequence_length=None),
}
PHASES = {  # table column -> metrics.jsonl key (seconds of one training iteration)
    "rollout": "seconds_rollout",
    "continuation": "seconds_credit_model",
    "decode": "seconds_credit_decode",
    "reward": "seconds_credit_reward",
    "update": "seconds_train",
}


def vocabulary(prompts: list[str]) -> list[str]:
    """The lowercase words of ``prompts`` (the stand-in tokenizers spell these)."""
    return sorted({w for p in prompts for w in re.findall(r"[a-z]+", p.lower())})


PROMPT_FILES = {  # name -> extension
    "pickscore_train": "txt",
    "pickscore_test": "txt",
    "ocr_train": "txt",
    "ocr_test": "txt",
    "geneval_train": "jsonl",
}


def prompt_files(folder: Path) -> dict[str, Path]:
    return {name: folder / f"{name}.{ext}" for name, ext in PROMPT_FILES.items()}


def geneval_prompts() -> list[dict]:
    """GenEval's training prompts for the rehearsal: metadata built like GenEval's suite (two-object prompts and on)."""
    from dgx.eval.geneval_prompts import build_suite

    return build_suite(n=4)[80:88]


def write_prompts(folder: Path) -> dict[str, Path]:
    """Training and test prompt files for the three configs (GenEval's: one JSON metadata object per line)."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = {
        "pickscore_train": PICKSCORE_PROMPTS,
        "pickscore_test": PICKSCORE_PROMPTS[::-1],
        "ocr_train": OCR_PROMPTS,
        "ocr_test": OCR_PROMPTS[::-1],
        "geneval_train": [json.dumps(m) for m in geneval_prompts()],
    }
    files = prompt_files(folder)
    for name, path in files.items():
        path.write_text("\n".join(texts[name]) + "\n")
    return files


def prompt_vocabulary() -> list[str]:
    """The words of every rehearsal prompt (what the stand-in tokenizers must spell)."""
    return vocabulary([*PICKSCORE_PROMPTS, *OCR_PROMPTS, *(m["prompt"] for m in geneval_prompts())])


def standin_paths(folder: Path, families: list[str]) -> dict[str, Path]:
    """The stand-in folders: each model family's (``model_NAME``) and the rewards'."""
    return {k: folder / k for k in ("pickscore", "mask2former", "clip_l")} | {
        f: folder / f"model_{f}" for f in families
    }


def write_standins(
    folder: Path, scale: str, words: list[str], families: list[str], device: str = "cpu"
) -> dict[str, Path]:
    """The stand-in folders of the model ``families`` (their registry entries' ``stand_in``) and the rewards (written
    once; an existing ``folder/done.json`` of the same scale, words and families is reused)."""
    from dgx.eval.geneval_prompts import COCO_CLASSES
    from dgx.grpo.contracts import stand_in
    from dgx.grpo.registry import Registry
    from dgx.rewards.architectures import CLIP_TINY, CLIP_VIT_L_14, save_clip, save_mask2former
    from dgx.rewards.geneval import COLORS

    paths = standin_paths(folder, families)
    words = sorted(set(words) | set(vocabulary([*COCO_CLASSES, *COLORS, "a photo of an and colored object"])))
    done = folder / "done.json"
    if done.is_file() and json.loads(done.read_text()) == {"scale": scale, "words": words, "families": families}:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    registry = Registry()
    for family in families:
        stand_in(registry.get("models", family), paths[family], scale=scale, words=words, device=device)
    save_clip(paths["pickscore"], words, scale, device=device)
    save_clip(paths["clip_l"], words, scale, CLIP_VIT_L_14 if scale == "paper" else CLIP_TINY, device)
    save_mask2former(paths["mask2former"], list(COCO_CLASSES), scale, device)
    done.write_text(json.dumps({"scale": scale, "words": words, "families": families}))
    return paths


KINDS = ("pickscore", "geneval", "ocr")  # the rewards the rehearsal has stand-ins and prompts for


def config_body(config: str) -> dict:
    """The run config of ``config`` (``base`` of an ablation file), read before validation, which would want the
    prompt files and weights the rehearsal replaces."""
    import yaml

    try:
        data = yaml.safe_load(Path(config).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{config}: not valid YAML ({e})") from None
    body = data.get("base", data) if isinstance(data, dict) else {}
    return body if isinstance(body, dict) else {}


def reward_kind(config: str) -> str:
    """The config's reward (``reward.name``), one of KINDS."""
    name = (config_body(config).get("reward") or {}).get("name")
    if name not in KINDS:
        raise ConfigError(f"{config}: reward {name!r}: dgx rehearse has stand-ins for {', '.join(KINDS)} only")
    return name


def model_family(config: str) -> str:
    """The config's model family (``model.name``), whose registry entry must name a ``stand_in``."""
    from dgx.grpo.registry import Registry

    name = (config_body(config).get("model") or {}).get("name", "shapes")
    entry = Registry().get("models", name, f"{config}: model.name: ")
    if not entry.stand_in:
        raise ConfigError(f"{config}: model {name!r} has no stand_in in its registry entry for dgx rehearse to build")
    return name


def overrides(
    kind: str,
    family: str,
    sides: set[str],
    paths: dict[str, Path],
    prompts: dict[str, Path],
    scale: str,
    iterations: int,
    processes: int = 1,
) -> dict:
    """What the rehearsal changes in a paper config whose reward is ``kind`` and model ``family`` (its model node
    setting the keys ``sides``): the stand-ins' folders, its prompt files and the size of a run (calibration: at least
    one sample per process)."""
    size = SIZES[scale]
    model = {"path": str(paths[family])}
    model |= {k: size[k] for k in ("dtype", "resolution", "max_sequence_length") if size[k] is not None}
    if size["resolution"] is not None:  # a video's height and width too
        model |= {k: size["resolution"] for k in ("height", "width") if k in sides}
    reward, ev = {}, {"max_prompts": size["eval_prompts"], "images_per_prompt": 1, "batch": size["eval_prompts"]}
    if kind == "pickscore":
        reward = {"path": str(paths["pickscore"]), "processor_path": str(paths["pickscore"])}
        ev |= {"path": str(paths["pickscore"]), "processor_path": str(paths["pickscore"])}
    elif kind == "geneval":
        reward = {"path": str(paths["mask2former"]), "processor_path": str(paths["clip_l"])}
        ev |= {"path": str(paths["mask2former"]), "processor_path": str(paths["clip_l"]), "min_images_per_tag": 0}
    if f"{kind}_test" in prompts:
        ev["prompts_file"] = str(prompts[f"{kind}_test"])
    g = size["group_size"]
    return {
        "model": model,
        "reward": reward,
        "prompts": {"path": str(prompts[f"{kind}_train"])},
        "train": {"iterations": iterations, "prompts_per_iter": 1, "group_size": g, "micro_batch": size["micro_batch"]},
        "calibrate": {"iterations": 1, "prompts": 1, "group_size": max(min(g, 4), processes), "check_prompts": 1},
        "eval": ev,
    }


def peak_memory_gib(row: dict) -> tuple[float, str]:
    """The iteration's peak GPU memory (``max_memory_allocated``), else the process's peak resident set so far."""
    if "gpu_peak_gib" in row:
        return row["gpu_peak_gib"], "GPU"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "RSS"


def measure(run: Path, config: str, variant: str) -> dict:
    """One training run's last iteration as a table row (a run's first iteration includes the warm-up: kernel
    selection, allocator growth, an OCR worker pool's start)."""
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    row = {"config": Path(config).stem, "variant": variant, "iterations": len(rows)}
    row |= {name: round(last.get(key, 0.0), 3) for name, key in PHASES.items()}
    total = last["seconds_rollout"] + last["seconds_credit"] + last["seconds_train"]
    row["iteration"] = round(total, 3)
    row["reward_share"] = round(last.get("seconds_credit_reward", 0.0) / total, 4)
    row["model_calls"], row["model_evaluations"] = last["model_calls"], last["model_evaluations"]
    row["peak_gib"], row["memory"] = peak_memory_gib(last)
    row["peak_gib"] = round(row["peak_gib"], 2)
    return row


def ratios(rows: list[dict]) -> list[dict]:
    """Per config, DenseGRPO's iteration time, model calls (batched forward passes) and model evaluations (per-image
    forward passes) over Flow-GRPO's, and the time ratio over each count's."""
    out = []
    for config in dict.fromkeys(r["config"] for r in rows):
        by = {r["variant"]: r for r in rows if r["config"] == config}
        if set(VARIANTS) <= set(by):
            flow, dense = by["flow_grpo"], by["dense_grpo"]
            time_ratio = dense["iteration"] / flow["iteration"]
            calls_ratio = dense["model_calls"] / flow["model_calls"]
            evaluations_ratio = dense["model_evaluations"] / flow["model_evaluations"]
            out.append(
                {
                    "config": config,
                    "time_ratio": round(time_ratio, 3),
                    "calls_ratio": round(calls_ratio, 3),
                    "time_over_calls": round(time_ratio / calls_ratio, 3),
                    "evaluations_ratio": round(evaluations_ratio, 3),
                    "time_over_evaluations": round(time_ratio / evaluations_ratio, 3),
                }
            )
    return out


def markdown(result: dict) -> str:
    """The rehearsal's tables as Markdown."""
    cols = [
        "config",
        "variant",
        *PHASES,
        "iteration",
        "reward_share",
        "model_calls",
        "model_evaluations",
        "peak_gib",
    ]
    unit = result["rows"][0]["memory"] if result["rows"] else "GPU"
    head = [
        *cols[:2],
        *(f"{c} s" for c in [*PHASES, "iteration"]),
        "reward share",
        "model calls",
        "model evaluations",
        f"peak {unit} GiB",
    ]
    lines = [
        f"Rehearsal at scale `{result['scale']}` on {result['device']} ({result['when']}): the last of "
        f"{result['iterations']} training iteration(s) per variant, one prompt group of {result['group_size']}"
        + (f", with {json.dumps(result['set'])}." if result.get("set") else "."),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in result["rows"]:
        cells = [f"{r[c]:.1%}" if c == "reward_share" else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "DenseGRPO over Flow-GRPO: iteration time, model calls (batched forward passes) and model evaluations "
        "(per-image forward passes, a CFG pair counted twice). Time over a count near 1: the extra time is that "
        "count's extra work; above 1, decoding and scoring add to it:",
        "",
        "| config | time ratio | model-call ratio | time / calls | evaluation ratio | time / evaluations |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['config']} | {r['time_ratio']} | {r['calls_ratio']} | {r['time_over_calls']} | "
        f"{r['evaluations_ratio']} | {r['time_over_evaluations']} |"
        for r in result["ratios"]
    ]
    lines += [
        "",
        "Whole run per config, seconds (stand-ins loaded, base evaluation, calibration, both trainings and "
        "evaluations): " + ", ".join(f"{k} {v:.0f}" for k, v in result["wall_seconds"].items()),
        "",
    ]
    return "\n".join(lines)


def rehearse(
    out: Path,
    scale: str = "tiny",
    configs: tuple[str, ...] = CONFIGS,
    iterations: int = 2,
    device: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Write the stand-ins and prompts under ``out``, run each config's Flow-GRPO and DenseGRPO variants through
    ``dgx run`` into ``out/CONFIG`` and write ``out/rehearsal.md`` / ``.json``; returns the result. ``extra``: a
    config fragment merged over the rehearsal's changes (``--set``, e.g. ``{"credit": {"chunk": 16}}``)."""
    from datetime import datetime, timezone

    from dgx.grpo.config import deep_merge
    from dgx.grpo.runner import run_ablation

    if scale not in SCALES:
        raise ConfigError(f"--scale {scale}: expected one of {', '.join(SCALES)}")
    for c in configs:
        if not Path(c).is_file():
            raise ConfigError(f"{c}: config file not found (run from the repository root, or give the paper configs)")
    kinds = {c: reward_kind(c) for c in configs}  # every config checked before minutes of writing stand-ins
    families = {c: model_family(c) for c in configs}
    # under `accelerate launch` the main process writes the stand-ins, the others wait; on the CPU, as the configs'
    # `device: cpu` would (--set device=cpu) for accelerate to see several CPU processes
    state = PartialState(cpu=(extra or {}).get("device") == "cpu")
    device = device or str(state.device if torch.cuda.is_available() else "cpu")
    needed = sorted(set(families.values()))
    prompts, paths = prompt_files(out / "prompts"), standin_paths(out / "standins", needed)
    if state.is_main_process:
        write_prompts(out / "prompts")
        write_standins(out / "standins", scale, prompt_vocabulary(), needed, device)
    state.wait_for_everyone()
    result = {
        "scale": scale,
        "device": (torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU")
        + (f", {state.num_processes} processes" if state.num_processes > 1 else ""),
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "iterations": iterations,
        "group_size": SIZES[scale]["group_size"],
        "rows": [],
        "ratios": [],
        "wall_seconds": {},
        "set": extra or {},
    }
    for config in configs:  # the tables are rewritten after each config: a run cut short keeps what it measured
        t0 = time.perf_counter()
        folder = out / Path(config).stem
        sides = set(config_body(config).get("model") or {})
        change = overrides(
            kinds[config], families[config], sides, paths, prompts, scale, iterations, state.num_processes
        )
        change = deep_merge(change, extra or {})
        run_ablation(
            Path(config), folder, only=list(VARIANTS), seeds=[0], overrides=change, overwrite=True
        )  # measured anew
        if not state.is_main_process:  # the main process writes the metrics and the tables
            continue
        result["wall_seconds"][Path(config).stem] = round(time.perf_counter() - t0, 1)
        result["rows"] += [measure(folder / v / "seed_0", config, v) for v in VARIANTS]
        result["ratios"] = ratios(result["rows"])
        (out / "rehearsal.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "rehearsal.md").write_text(markdown(result))
    return result

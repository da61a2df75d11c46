"""Export a trained run for reuse and publish it on the Hugging Face Hub (`dgx push`).

The export holds the LoRA in the diffusers format (the model's pipeline class, e.g.
``StableDiffusion3Pipeline`` or ``FluxPipeline``, reads it with ``load_lora_weights``, LoRA
config included), or, for a run with ``train.adapter: full``, the whole transformer in diffusers'
format (``transformer/``, read with the transformer class's ``from_pretrained``), the resolved config, psi(t), the evaluation metrics, the training
metrics, sample images of the base model and the adapter (same prompts and noise) and a
model card (README.md with Hub metadata).
It is built in a staging folder, never in the run folder; the token comes from
huggingface_hub's standard places (HF_TOKEN, the login cache) and is never printed,
logged or written anywhere.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from dgx.grpo import checkpoint as ckpt_module
from dgx.grpo.config import RunConfig
from dgx.grpo.errors import ConfigError, HubError
from dgx.rewards.base import to_uint8

CARD = """{front_matter}
# {title}

{what} for `{base}` trained with **dgx** ({method}) on the `{reward}` reward.

| setting | value |
|---|---|
| credit | `{credit}`{ode_steps} |
| sampler | `{sampler}`, {steps} steps, noise `{noise}` |
| iterations x prompts x group | {iterations} x {prompts} x {group} |
| checkpoint | `{checkpoint}` |
| trained | {trained_what} |

## Results ({eval_name}, ODE sampler, {eval_steps} steps)

{results}

The base model (top row) and this {short} (bottom row) on the same prompts and initial noise:

![samples](samples.png)

## Use

```python
{load}
```
"""
USE_LORA = '{load}\npipe.load_lora_weights("{repo_id}")'
USE_FULL = (
    'from diffusers import {transformer}\ntransformer = {transformer}.from_pretrained("{repo_id}", subfolder="transformer")'
    "\n{load}"
)
LOAD_HUB = 'from diffusers import {cls}\npipe = {cls}.from_pretrained("{base}")'
LOAD_PKG = (
    "from diffusers import StableDiffusion3Pipeline\nfrom dgx.grpo.build import resolve_path  # pip install dgx-grpo\n"
    'pipe = StableDiffusion3Pipeline.from_pretrained(resolve_path("{base}"), text_encoder_3=None, tokenizer_3=None)'
)


def run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir}: not a dgx run folder (no config.yaml); give VARIANT/seed_N of a `dgx run` output"
        )
    return RunConfig.model_validate(yaml.safe_load(path.read_text()))


def run_registry(run_dir: Path):
    """The registry a run was trained with: the installed components plus the registry files its config named
    (``registry.json``, written by ``dgx run``)."""
    from dgx.grpo.registry import Registry

    record = Path(run_dir) / "registry.json"
    files = json.loads(record.read_text())["files"] if record.is_file() else []
    return Registry([f for f in files if Path(f).is_file()])


def kept_checkpoint(run_dir: Path, name: str | None) -> Path:
    """``run_dir`` itself (its latest checkpoint) when ``name`` is None, else its kept checkpoint ``name``
    (``iter_NNNNN``, a milestone, or ``best``; never a path, which could name another run's); an unknown name is a
    ConfigError listing the kept ones."""
    if name is None:
        return Path(run_dir)
    if not re.fullmatch(r"iter_\d{5}|best", name):
        raise ConfigError(f"--checkpoint {name!r}: give a kept checkpoint's name (iter_NNNNN or best), not a path")
    ckpts = Path(run_dir) / "checkpoints"
    if not ckpt_module.holds_adapter(ckpts / name):
        kept = sorted(p.name for p in ckpts.glob("*") if ckpt_module.holds_adapter(p))
        raise ConfigError(f"{run_dir}: no kept checkpoint {name!r} (kept: {', '.join(kept) or 'none'})")
    return ckpts / name


def export_run(
    run_dir: Path, out: Path, repo_id: str = "<repo-id>", n_samples: int = 8, checkpoint: str | None = None
) -> list[Path]:
    """Write the export of ``run_dir`` (its latest checkpoint, or the kept ``checkpoint``) into ``out``; returns the
    files written. The run's final evaluation goes into the card only for the latest checkpoint."""
    from dgx.grpo.adapter import full, load_adapter
    from dgx.grpo.build import build_model

    run_dir, out = Path(run_dir), Path(out)
    cfg = run_config(run_dir)
    registry = run_registry(run_dir)
    model = build_model(cfg, registry)
    ckpt = load_adapter(model, cfg, kept_checkpoint(run_dir, checkpoint), strict=True)  # the card states cfg's LoRA
    trained = ckpt_module.iteration(ckpt) + 1
    out.mkdir(parents=True, exist_ok=True)
    whole = full(model)  # what the checkpoint holds, as loaded: the whole transformer or a LoRA
    write_weights(model, whole, out)
    shutil.copy(run_dir / "config.yaml", out / "config.yaml")
    # the run's final evaluation describes its last checkpoint only (not a kept one, nor an older one exported
    # because the last is damaged)
    final_eval = [run_dir / "eval" / "summary.json"] if checkpoint is None and trained == cfg.train.iterations else []
    for src in [ckpt / "psi.json", *final_eval, run_dir / "metrics.jsonl"]:
        if src.is_file():
            shutil.copy(src, out / ("eval_summary.json" if src.name == "summary.json" else src.name))
    short = "model" if whole else "LoRA"
    write_samples(model, cfg, registry, short, n_samples, out / "samples.png")
    summary = json.loads((out / "eval_summary.json").read_text()) if (out / "eval_summary.json").is_file() else {}
    card = model_card(model, cfg, registry, whole, short, summary, repo_id, f"{ckpt.name}", trained)
    (out / "README.md").write_text(card)
    return sorted(p for p in out.rglob("*") if p.is_file())


def write_weights(model, whole: bool, out: Path) -> None:
    """The trained weights in diffusers' format: the whole transformer in ``out/transformer``, or the LoRA through
    the pipeline class that will load it."""
    from peft.utils import get_peft_model_state_dict

    tr = model.transformer
    if whole:
        tr.save_pretrained(out / "transformer")
        return
    type(model.pipe).save_lora_weights(
        out,
        transformer_lora_layers=get_peft_model_state_dict(tr),
        transformer_lora_adapter_metadata=tr.peft_config["default"].to_dict(),
    )


def write_samples(model, cfg: RunConfig, registry, short: str, n: int, path: Path) -> None:
    """The first ``n`` test prompts' images of the base model (top row) and the trained one (``this SHORT``), on the
    same prompts and noise."""
    from dgx.eval.benchmarks import generate
    from dgx.eval.plots import sample_grid
    from dgx.grpo.adapter import adapter_disabled
    from dgx.grpo.build import load_prompts

    prompts = [m["prompt"] for m in load_prompts(cfg, registry, "test")[:n]]
    images = {f"this {short}": generate(model, prompts, cfg.eval.steps, cfg.eval_guidance, seed=0)}
    with adapter_disabled(model):  # the base model on the same prompts and noise
        images["base"] = generate(model, prompts, cfg.eval.steps, cfg.eval_guidance, seed=0)
    sample_grid({k: list(to_uint8(images[k])) for k in ("base", f"this {short}")}, prompts, path)


def model_card(
    model, cfg: RunConfig, registry, whole: bool, short: str, summary: dict, repo_id: str, ckpt: str, trained: int
) -> str:
    """README.md: Hub metadata, the run's settings, its evaluation ``summary`` and how to load the export."""
    from huggingface_hub import ModelCardData

    base = cfg.model.args.get("path") or registry.get("models", cfg.model.name).defaults.get("path", cfg.model.name)
    data = ModelCardData(
        base_model=None if base.startswith("pkg://") else base,
        library_name="diffusers",
        license="other",
        tags=["dgx", "full-finetune" if whole else "lora", "text-to-image", "grpo", cfg.credit.name, cfg.model.name],
    )
    # the credit rule's registry description names its method first ("DenseGRPO - ...")
    method = registry.get("credit", cfg.credit.name).description.split(" - ")[0] or cfg.credit.name
    args = ", ".join(f"{k} = {v}" for k, v in cfg.credit.args.items())
    results = (
        "\n".join(["| metric | value |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in summary.items()])
        or "not evaluated"
    )
    load = (LOAD_PKG if base.startswith("pkg://") else LOAD_HUB).format(base=base, cls=type(model.pipe).__name__)
    return CARD.format(
        front_matter=f"---\n{data.to_yaml()}\n---",
        title=f"dgx {method} {'fine-tuned transformer' if whole else 'LoRA'}",
        base=base,
        method=method,
        reward=cfg.reward.name,
        credit=cfg.credit.name,
        ode_steps=f" ({args})" if args else "",
        load=(USE_FULL if whole else USE_LORA).format(
            load=load, repo_id=repo_id, transformer=type(model.transformer).__name__
        ),
        what="Fine-tuned transformer" if whole else "LoRA",
        short=short,
        trained_what="the whole transformer"
        if whole
        else f"LoRA rank {cfg.train.lora_rank}, alpha {cfg.train.lora_alpha}",
        sampler=cfg.sampler.name,
        steps=cfg.sampler.steps,
        noise=cfg.sampler.noise.name,
        iterations=trained if trained == cfg.train.iterations else f"{trained} (of {cfg.train.iterations})",
        checkpoint=ckpt,
        prompts=cfg.train.prompts_per_iter,
        group=cfg.train.group_size,
        eval_name=cfg.eval.name,
        eval_steps=cfg.eval.steps,
        results=results,
        repo_id=repo_id,
    )


NETWORK = ("Connect", "Timeout", "Network", "Transport", "Protocol")  # in the names of HTTP libraries' errors


def network_error(e: BaseException) -> bool:
    """Whether ``e`` is a failed connection, whichever HTTP library huggingface_hub uses (requests, httpx, httpx2,
    urllib3...): an OSError, or an exception from such a library whose class names a connection problem."""
    if isinstance(e, OSError):
        return True
    return any(
        cls.__module__.split(".")[0] in ("requests", "urllib3", "httpx", "httpx2", "httpcore", "aiohttp")
        and any(word in cls.__name__ for word in NETWORK)
        for cls in type(e).__mro__
    )


@contextmanager
def hub_errors(repo_id: str) -> Iterator[None]:
    """The Hub's refusals and failed connections inside, as one HubError line saying what to do."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except OfflineModeIsEnabled as e:
        raise HubError(f"cannot push {repo_id}: offline mode (HF_HUB_OFFLINE=1); unset it and retry") from e
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        hint = {
            401: "the token is missing or invalid: run `huggingface-cli login` or set HF_TOKEN",
            403: f"the token has no write access to {repo_id}",
            404: f"{repo_id} or the revision does not exist",
        }
        raise HubError(
            f"push to {repo_id} failed (HTTP {status}): {hint.get(status, 'see the Hub response')}"
        ) from None
    except Exception as e:
        if not network_error(e):
            raise
        raise HubError(
            f"cannot reach the Hub to push {repo_id} ({type(e).__name__}); check the network or HF_ENDPOINT"
        ) from None


def push_run(
    run_dir: Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    api=None,
    checkpoint: str | None = None,
):
    """Check the repo id and reach the Hub (creating the repository and branch), then export into a staging folder
    and upload it in one commit; yields progress lines. Nothing is exported before the Hub has answered."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ConfigError(f"--repo-id {repo_id!r}: {str(e).splitlines()[0]}") from None
    run_config(run_dir)
    kept_checkpoint(run_dir, checkpoint)
    if not dry_run:
        api = api or HfApi()
        with hub_errors(repo_id):
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dgx-export-") as tmp:
        files = export_run(run_dir, Path(tmp), repo_id, checkpoint=checkpoint)
        for f in files:
            yield f"{'would upload' if dry_run else 'exported'} {f.relative_to(tmp)} ({f.stat().st_size} bytes)"
        if dry_run:
            return
        with hub_errors(repo_id):
            info = api.upload_folder(
                folder_path=tmp,
                repo_id=repo_id,
                revision=revision,
                repo_type="model",
                commit_message=f"dgx push of {Path(run_dir).name}",
            )
        yield f"pushed {len(files)} files to {repo_id}: {getattr(info, 'commit_url', info)}"

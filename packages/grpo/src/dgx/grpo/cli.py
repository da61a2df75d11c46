"""The ``dgx`` command line: data, validate, run, calibrate, eval, rehearse, bench, push, registry, serve-reward.

Every failure prints one line, ``error: ...``, and exits non-zero (2 for a config or run error the message explains,
1 for anything else: a file, a model that cannot load, the network); ``dgx --debug ...`` shows the traceback.
"""

from __future__ import annotations

import gc
import signal
import sys
from pathlib import Path

import click
from dgx.grpo.errors import ConfigError, HubError, TrainingError


def _own(e: BaseException) -> bool:
    """An error dgx raised on purpose, whose message already says what and where."""
    from dgx.rewards.base import RewardError
    from dgx.sampler.errors import SamplerError

    return isinstance(e, (ConfigError, TrainingError, HubError, RewardError, SamplerError))


def one_line(e: BaseException) -> str:
    """dgx's own errors by their message (one line per problem found), anything else as one line,
    ``Type: first line of the message``."""
    if _own(e):
        return str(e)
    text = " ".join(str(e).split("\n", 1)[0].split()) or repr(e)
    return f"{type(e).__name__}: {text}"


# the commands in the order of the work: fetch prompts, check a config, train and evaluate, check at scale, compare,
# publish; then the tools
WORKFLOW = ("data", "validate", "run", "calibrate", "eval", "rehearse", "bench", "push", "registry", "serve-reward")


class _Commands(click.Group):
    """A group whose commands fail with one line unless ``--debug`` is given, listed in the order of the work with
    their whole summaries."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands, key=lambda n: WORKFLOW.index(n) if n in WORKFLOW else len(WORKFLOW))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, self.commands[n].get_short_help_str(limit=1000)) for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # the output's reader left (`dgx registry | head`): nothing to report
            sys.exit(0)
        except Exception as e:
            if ctx.params.get("debug"):
                raise
            hint = "" if _own(e) else " (dgx --debug ... shows the traceback)"
            for line in f"{one_line(e)}{hint}".splitlines():  # one line per problem found
                click.secho(f"error: {line}", fg="red", err=True)
            sys.exit(2 if _own(e) else 1)
        except KeyboardInterrupt as e:  # SIGINT or SIGTERM (stopping.Stopped): where it stopped, how to go on
            from dgx.grpo.stopping import Stopped, exit_code

            stop = e if isinstance(e, Stopped) else Stopped(signal.SIGINT)
            message, code = str(stop), exit_code(stop)
            del stop
        # the exception and its frames are gone: interrupted progress bars close now, above the last line
        gc.collect()
        click.secho(f"\n{message}", fg="yellow", err=True)
        sys.exit(code)


SET_HELP = (
    "Override a config key in every variant: KEY=VALUE, dotted key, YAML value (repeatable), e.g. --set train.lr=1e-3."
)


def _overrides(sets: tuple[str, ...], **extra) -> dict:
    """``--set`` items (and shortcut options such as --iterations) as one override dict."""
    from dgx.grpo.config import deep_merge, parse_sets

    return deep_merge(parse_sets(sets), {k: v for k, v in extra.items() if v is not None})


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 120},
)
@click.version_option(package_name="dgx-grpo", prog_name="dgx")
@click.option("--debug", is_flag=True, help="Show the full traceback of a failure instead of one line.")
def main(debug: bool) -> None:
    """dgx: align flow-matching text-to-image models with GRPO and DenseGRPO.

    Start with `dgx run configs/shapes_quick.yaml` (the embedded shapes world, CPU).
    """
    from dgx.grpo.stopping import stop_on_signals

    stop_on_signals()  # SIGINT and SIGTERM end a command cleanly, saying where it stopped
    if not debug:  # a warning is one line too (with --debug: Python's, with the file and line)
        import warnings

        warnings.showwarning = _warning_line


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True)


def _main_process() -> bool:
    """False on the other processes of an `accelerate launch`, which print no results."""
    from accelerate import PartialState

    return PartialState().is_main_process


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--only", "only", multiple=True, help="Run only this variant (repeatable).")
@click.option("--seed", "seeds", type=int, multiple=True, help="Run only this seed (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Results folder (default runs/<file stem>).")
@click.option("--resume", is_flag=True, help="Continue killed runs from their last checkpoint; skip finished ones.")
@click.option("--overwrite", is_flag=True, help="Replace the earlier results of these runs in OUT (else refused).")
@click.option(
    "--accept-memory-estimate", is_flag=True, help="Run even if a batch's memory estimate exceeds the machine's."
)
@click.option(
    "--iterations", type=int, default=None, help="Shortcut for --set train.iterations=N (with --resume: train longer)."
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def run(
    file: Path,
    only: tuple[str, ...],
    seeds: tuple[int, ...],
    out: Path | None,
    resume: bool,
    overwrite: bool,
    accept_memory_estimate: bool,
    iterations: int | None,
    sets: tuple[str, ...],
) -> None:
    """Train and evaluate every variant x seed of FILE into one results folder."""
    from dgx.grpo.runner import run_ablation

    if resume and overwrite:
        raise ConfigError("--resume continues the runs in --out and --overwrite replaces them: give one")
    overrides = _overrides(sets, train={"iterations": iterations} if iterations is not None else None)
    out = run_ablation(
        file,
        out=out,
        only=list(only),
        seeds=list(seeds),
        resume=resume,
        overrides=overrides,
        overwrite=overwrite,
        accept_memory=accept_memory_estimate,
    )
    if not _main_process():
        return
    for table, title in (("summary.md", "test score"), ("gain.md", "gain over the base model (± standard error)")):
        if (out / table).is_file():
            click.echo(f"\n{title}:\n{(out / table).read_text()}")
    click.echo(f"report: {out / 'report.md'}")


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--variant", default=None, help="Variant of an ablation file to calibrate (default: the first).")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Output folder (default runs/<stem>/calibration)."
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option(
    "--resume", is_flag=True, help="Continue from OUT/progress.json (same settings; more iterations allowed)."
)
@click.option("--overwrite", is_flag=True, help="Replace a finished calibration in OUT (else refused).")
def calibrate(
    file: Path, variant: str | None, out: Path | None, sets: tuple[str, ...], resume: bool, overwrite: bool
) -> None:
    """Calibrate the per-timestep noise psi(t) (DenseGRPO Algorithm 1); writes psi.json and a plot."""
    from dgx.grpo.calibrate import calibrate_file, mean_imbalance

    if resume and overwrite:
        raise ConfigError("--resume continues the calibration in --out and --overwrite replaces it: give one")
    path = calibrate_file(
        file, variant=variant, out=out, overrides=_overrides(sets), resume=resume, overwrite=overwrite
    )
    b = mean_imbalance(path)
    if _main_process():
        click.echo(
            f"wrote {path} and psi.png; mean |#(dR > 0) - #(dR < 0)| / N on fresh samples: "
            f"calibrated {b['calibrated']:.3f}, uniform a = 0.7 {b['uniform_a0.7']:.3f}"
        )


@main.command("serve-reward")
@click.argument("reward")
@click.option("--variant", default=None, help="Variant of an ablation file whose reward to serve (default: the first).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a key, e.g. --set reward.path=DIR.")
@click.option("--device", default=None, help="Device of the reward's models, e.g. cuda:1 (default: the config's).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--batch-window",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 10),
    help="Seconds to gather concurrent requests into one batch (0: each request's batch as sent, bit-exact).",
)
@click.option("--max-batch", default=256, show_default=True, type=click.IntRange(1), help="Images per gathered batch.")
def serve_reward(reward: str, variant, sets, device, host: str, port: int, batch_window: float, max_batch: int) -> None:
    """Serve a reward over HTTP for `reward: {name: remote, url: ...}`: REWARD is a registry name or a config file."""
    from dgx.grpo.build import build_reward
    from dgx.grpo.distributed import device_for
    from dgx.rewards.base import load_now
    from dgx.rewards.server import serve

    cfg, registry = _reward_config(reward, variant, _overrides(sets))
    built = build_reward(cfg.reward, registry, device=device or device_for(cfg))
    load_now(built)
    click.echo(f"serving reward {cfg.reward.name!r} at http://{host}:{port} (POST /score, GET /health)")
    serve(built, host=host, port=port, batch_window=batch_window, max_batch=max_batch)


def _reward_config(reward: str, variant: str | None, overrides: dict):
    """The run config whose reward a server hosts: a config file's (its variant), or a registry name's alone."""
    from dgx.grpo.config import deep_merge, load, validate
    from dgx.grpo.registry import Registry

    if reward.endswith((".yaml", ".yml")) or Path(reward).is_file():
        abl = load(Path(reward), overrides=overrides)
        return abl.variant(variant)[1], abl.registry()
    registry = Registry()
    data = deep_merge({"reward": {"name": reward}}, overrides)
    return validate(data, Path("serve-reward"), {}, "", registry, overrides), registry


@main.command("eval")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--adapter",
    type=click.Path(path_type=Path),
    default=None,
    help="A run folder or checkpoint whose LoRA to evaluate, with its own LoRA settings (default: the base model).",
)
@click.option("--variant", default=None, help="Variant of an ablation file (default: the first).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder for per-image JSONL and summary (default runs/<stem>/eval/<variant>).",
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def eval_cmd(file: Path, adapter: Path | None, variant: str | None, out: Path | None, sets: tuple[str, ...]) -> None:
    """Evaluate the base model (or a trained adapter) with the config's evaluation and ODE sampler."""
    from dgx.grpo.runner import evaluate_file

    summary = evaluate_file(file, adapter=adapter, variant=variant, out=out, overrides=_overrides(sets))
    for k, v in summary.items() if _main_process() else ():
        click.echo(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")


@main.command("data")
@click.argument("names", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Fetch every set.")
def data_cmd(names: tuple[str, ...], fetch_all: bool) -> None:
    """Fetch the paper's prompt sets (Flow-GRPO's, at a pinned commit, sha256-checked) into the cache that configs
    read as data://NAME; without NAME, list them."""
    from dgx.grpo import data

    if not names and not fetch_all:
        for name, f in data.SETS.items():
            path = data.cached(name)
            check = "pinned sha256" if f.sha256 else "pinned git blob id"
            click.echo(f"  {name:16s} {'cached: ' + str(path) if path else 'not fetched'}  [{f.path}, {check}]")
        click.echo(f"cache: {data.cache_dir()} ({data.REPOSITORY} at {data.COMMIT[:7]})")
        return
    for name in data.SETS if fetch_all else names:
        click.echo(f"{name}: {data.fetch(name, progress=_main_process())}")


@main.command("bench")
@click.option(
    "--task",
    type=click.Choice(["mechanism", "methods", "preference", "all"]),
    default="all",
    show_default=True,
    help="mechanism: the smooth ink reward (resolves on a CPU); methods: the field's methods on it; preference: the "
    "shapes PickScore.",
)
@click.option("--quick", is_flag=True, help="Smoke run: 1 iteration, 1 seed, 12 test prompts (a few minutes).")
@click.option("--resume", is_flag=True, help="Keep finished runs and continue the others (after a crash).")
@click.option("--report-only", is_flag=True, help="Write the report from the runs finished so far; train nothing.")
@click.option(
    "--publish",
    is_flag=True,
    help="Write the report into the repository's tracked BENCHMARKS.md and docs/bench/ (else runs/bench/ only).",
)
def bench_cmd(task: str, quick: bool, resume: bool, report_only: bool, publish: bool) -> None:
    """The paper's comparisons on the shapes world (about 50 minutes on a 2-core CPU) -> runs/bench/TASK/ and
    runs/bench/BENCHMARKS.md; with --publish, the tracked BENCHMARKS.md and docs/bench/."""
    from dgx.grpo.bench import TASKS, bench

    tasks = list(TASKS) if task == "all" else [task]
    path = bench(tasks, quick=quick, resume=resume, report_only=report_only, publish=publish)
    click.echo(path.read_text())
    click.echo(f"wrote {path}")


@main.command()
@click.argument("configs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--scale",
    type=click.Choice(["tiny", "paper"]),
    default="tiny",
    show_default=True,
    help="Stand-ins at toy widths (CPU) or at the published sizes (a GPU with ~80 GB).",
)
@click.option(
    "--iterations",
    type=int,
    default=2,
    show_default=True,
    help="Training iterations per variant; the table times the last (the first includes the warm-up).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("runs/rehearsal"), show_default=True, help="Results folder."
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP + " Applies to every config.")
def rehearse(configs: tuple[Path, ...], scale: str, iterations: int, out: Path, sets: tuple[str, ...]) -> None:
    """Run the paper configs (default configs/sd35m_{pickscore,geneval,ocr}.yaml) on random-weight stand-ins of every
    model, one Flow-GRPO and one DenseGRPO run each, and time every phase -> OUT/rehearsal.md."""
    from dgx.grpo.rehearse import CONFIGS
    from dgx.grpo.rehearse import rehearse as run

    if iterations < 1:
        raise ConfigError("--iterations must be at least 1")
    run(out, scale, tuple(str(c) for c in configs) or CONFIGS, iterations, extra=_overrides(sets))
    if not _main_process():
        return
    click.echo((out / "rehearsal.md").read_text())
    click.echo(f"wrote {out / 'rehearsal.md'}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--repo-id", required=True, help="Hub repository, e.g. user/dgx-shapes-densegrpo.")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--revision", default=None, help="Branch to push to.")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded; upload nothing.")
@click.option(
    "--checkpoint", default=None, help="A kept checkpoint instead of the latest: iter_NNNNN (a milestone) or best."
)
def push(
    run_dir: Path, repo_id: str, private: bool, revision: str | None, dry_run: bool, checkpoint: str | None
) -> None:
    """Export a trained run (diffusers LoRA, config, psi, metrics, model card) and push it to the Hub."""
    from dgx.grpo.hub import push_run

    for line in push_run(run_dir, repo_id, private=private, revision=revision, dry_run=dry_run, checkpoint=checkpoint):
        click.echo(line)


@main.command()
@click.option(
    "--section",
    default=None,
    help="Only this section (models, samplers, noise, rewards, credit, objectives, evaluations).",
)
@click.option(
    "--file", "files", multiple=True, type=click.Path(path_type=Path), help="Extra registry file (repeatable)."
)
@click.option(
    "--check", is_flag=True, help="Build each component on its offline stand-in and check its kind's contract."
)
def registry(section: str | None, files: tuple[Path, ...], check: bool) -> None:
    """List the registered components (built-in, installed packages', $DGX_REGISTRY files and --file)."""
    from dgx.grpo.registry import SECTIONS, Registry

    reg = Registry(list(files))
    if check:  # the contracts build components: torch and the implementations load only then
        from dgx.grpo.contracts import KINDS
    failed = 0
    for s in [section] if section else SECTIONS:
        if s not in reg.sections:
            raise ConfigError(f"unknown section {s!r}; valid: {', '.join(SECTIONS)}")
        click.secho(s, bold=True)
        for name in reg.names(s):
            e = reg.sections[s][name]
            src = "" if e.source == "builtin" else f"  [{e.source}]"
            if not check or s not in KINDS:
                click.echo(f"  {name:16s} {e.description}{src}")
                continue
            verdict = _checked(reg, s, name)
            failed += verdict.startswith("FAILED")
            click.echo(f"  {name:16s} {verdict}{src}")
    if failed:
        raise ConfigError(f"{failed} component(s) break their kind's contract (above)")


def _checked(reg, section: str, name: str) -> str:
    """``ok``, ``skipped: why`` or ``FAILED: why``: the entry built on its offline stand-in against its kind's
    contract."""
    import tempfile

    from dgx.grpo.contracts import Unavailable, check_entry

    try:
        with tempfile.TemporaryDirectory() as folder:
            check_entry(reg, section, name, Path(folder))
        return "ok"
    except Unavailable as why:
        return f"skipped: {why}"
    except Exception as why:  # noqa: BLE001  (any failure of any package's component, reported)
        return f"FAILED: {type(why).__name__}: {why}"


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--show", is_flag=True, help="Print each variant's resolved config as YAML.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def validate(file: Path, show: bool, sets: tuple[str, ...]) -> None:
    """Check a config or ablation file without loading any model."""
    import yaml
    from dgx.grpo.config import load
    from dgx.grpo.memory import memory_problem

    abl = load(file, overrides=_overrides(sets))
    memory = [f"{file}: {name}: {why}" for name, v in abl.variants.items() if (why := memory_problem(v))]
    for line in abl.warnings + memory:
        click.secho(f"warning: {line}", fg="yellow", err=True)
    click.echo(f"{file}: OK - {len(abl.variants)} variant(s) x {len(abl.seeds)} seed(s): {', '.join(abl.variants)}")
    if show:
        registry = abl.registry()
        for name, cfg in abl.variants.items():
            click.secho(f"# {name}", bold=True)
            click.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())
            for line in component_arguments(cfg, registry):
                click.echo(line)
            click.echo("")


def component_arguments(cfg, registry) -> list[str]:
    """``# reward ink takes: background: float = 0.6``: what each node of ``cfg`` accepts, from its signature."""
    from dgx.grpo.config import NODES
    from dgx.grpo.nodes import describe

    lines = []
    for keys, section in NODES:
        node = cfg
        for k in keys:
            node = getattr(node, k)
        takes = describe(registry.get(section, node.name).load(), section)
        lines.append(f"# {'.'.join(keys)} {node.name} takes: {', '.join(takes) or 'no arguments'}")
    return lines


if __name__ == "__main__":
    main()

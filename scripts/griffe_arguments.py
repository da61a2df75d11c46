"""A griffe extension for dgx's API pages: a typed Parameters section for every documented function, method and
class whose docstring has none.

dgx's docstrings are prose that names each argument in double backquotes. The section lists every parameter of the
signature with its annotation and default, and as its description the sentence of the docstring that names it (for a
command, its option's ``--help``; for the names dgx uses throughout, what they mean), so the reference is typed
without repeating the prose by hand.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

SKIP = {"self", "cls"}

# what the names dgx uses throughout mean, for the parameters whose docstring does not say
COMMON = {
    "cfg": "The run's config.",
    "registry": "The component registry: dgx's entries and the config's own.",
    "device": "Where the model runs.",
    "model": "The generator (a flow-matching model adapter).",
    "seed": "The random seed.",
    "run_dir": "The run's folder.",
    "prompts": "The prompts.",
    "metadata": "Per-prompt (or per-image) metadata.",
    "traj": "The rollouts' trajectories.",
    "cond": "The prompts' conditioning.",
    "protocol": "How the evaluation samples and where it writes.",
    "scorers": "The run's scoring models, built once and shared.",
    "guidance": "The classifier-free guidance scale.",
    "images": "Images, float in [0, 1], NCHW.",
    "reward": "The reward: one score per image, for its prompt (and metadata).",
    "chunk": "Latents continued, decoded and scored per batch.",
    "ode_steps": "Steps of each ODE continuation to t = 0: an integer, or ``t`` (every remaining step).",
    "pipeline": "Decode and score one chunk in a worker thread while the next one's continuation runs.",
    "acc": "accelerate's Accelerator of this process.",
    "psi_path": "The calibration's psi table (psi.json).",
    "prompts_file": "A prompt file: .txt (one a line), .jsonl or .csv (``dgx.eval.benchmarks.read_prompts``).",
    "rewards": "Rewards by name.",
    "metas": "Per-image metadata.",
    "ckpt_root": "A run's ``checkpoints`` folder.",
    "optimizer": "The optimizer of the trained parameters.",
    "scheduler": "The learning-rate schedule.",
    "plugin": "accelerate's FSDP2 plugin, whose settings shard the module.",
    "negative": "The negative prompt of classifier-free guidance.",
    "detach_uncond": "No gradient through the unconditional velocity (Flow-GRPO's training).",
    "generator": "A generator, or one per sample.",
    "height": "The image height in pixels (default: the model's).",
    "width": "The image width in pixels (default: the model's).",
    "run_or_ckpt": "A run folder (its latest checkpoint) or a checkpoint folder.",
    "images_per_prompt": "Images drawn per prompt.",
    "min_images_per_tag": "Images per prompt raised so that every tag has at least this many (0: a fixed count).",
    "score_ode_steps": "With n = t, score the latents of deterministic steps too (their gains are 0 up to rounding).",
    "steps": "Denoising steps on the model's time grid.",
}


def mention(text: str, name: str) -> str:
    """The first sentence or clause (between semicolons) of ``text`` that names ``name`` in backquotes, else
    ''."""
    clauses = re.split(r"(?<=\.)\s+(?=[A-Z`(])|;\s+", " ".join(text.split()))
    return next((c for c in clauses if re.search(rf"`{{1,2}}{re.escape(name)}`{{1,2}}", c)), "")


def click_help(obj: griffe.Object) -> dict[str, str]:
    """The ``help`` of each ``click.option`` decorating a command function, by the parameter it fills (click's rule:
    the option's name without dashes unless one is given)."""
    helps = {}
    for decorator in getattr(obj, "decorators", []):
        call = decorator.value
        if not isinstance(call, griffe.ExprCall) or not str(call.function).endswith(".option"):
            continue
        keywords = {a.name: str(a.value) for a in call.arguments if isinstance(a, griffe.ExprKeyword)}
        try:
            names = [ast.literal_eval(str(a)) for a in call.arguments if not isinstance(a, griffe.ExprKeyword)]
            text = ast.literal_eval(keywords["help"])
        except (KeyError, ValueError, SyntaxError):  # no help, or one computed when the CLI is built
            continue
        plain = [n for n in names if not n.startswith("-")]
        flag = max((n.split("/")[0] for n in names if n.startswith("--")), key=len, default="")
        helps[plain[0] if plain else flag.lstrip("-").replace("-", "_")] = text
    return helps


def add_parameters(obj: griffe.Object, params: griffe.Parameters) -> None:
    """Append the section to ``obj``'s parsed docstring unless it has one, or no docstring or parameters."""
    rows = [p for p in params if p.name not in SKIP]
    if obj.docstring is None or not rows:
        return
    sections = obj.docstring.parsed
    if any(s.kind is griffe.DocstringSectionKind.parameters for s in sections):
        return
    text, helps = obj.docstring.value, click_help(obj)

    def describe(name: str) -> str:
        return mention(text, name) or helps.get(name) or COMMON.get(name, "")

    table = [
        griffe.DocstringParameter(p.name, description=describe(p.name), annotation=p.annotation, value=p.default)
        for p in rows
    ]
    obj.docstring.__dict__["parsed"] = [*sections, griffe.DocstringSectionParameters(table)]  # parsed is cached


class ArgumentsFromSignature(griffe.Extension):
    """Adds the sections once a package is loaded (dataclasses have their generated ``__init__`` by then)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in walk(pkg):
            if obj.is_function:
                add_parameters(obj, obj.parameters)
            elif obj.is_class and "__init__" in obj.members and not obj.members["__init__"].is_alias:
                add_parameters(obj, obj.members["__init__"].parameters)


def walk(obj: griffe.Object):
    """``obj`` and every object defined in it (not aliases), depth first."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from walk(member)

"""What a new user meets first: the README's budget, the commands and configs the docs name, one-line failures, and
no third-party warnings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from dgx.grpo.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _named(pattern: str, code_only: bool = False) -> set[str]:
    """What ``pattern`` captures in the pages (with ``code_only``: in their fenced code blocks)."""
    texts = [page.read_text() for page in PAGES]
    if code_only:
        texts = [block for text in texts for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S)]
    return {m for text in texts for m in re.findall(pattern, text)}


def test_readme_is_within_its_budget():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_every_command_the_docs_name_exists_and_has_help():
    named = _named(r"`dgx ([a-z][a-z-]*)") | _named(r"(?m)^\s*(?:\$ )?dgx ([a-z][a-z-]*)", code_only=True)
    assert {"run", "bench", "eval", "push", "validate", "calibrate", "registry"} <= named
    for cmd in sorted(named):
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, cmd


def test_every_config_the_docs_show_validates(monkeypatch):
    shown = _named(r"((?:configs|research/experiments)/[\w/.-]+\.yaml)")
    assert "configs/shapes_quick.yaml" in shown and len(shown) >= 5
    monkeypatch.chdir(ROOT)
    for path in sorted(p for p in shown if not p.startswith("configs/accelerate/")):  # accelerate's own files
        res = CliRunner().invoke(main, ["validate", str(ROOT / path)])
        assert res.exit_code == 0, (path, res.output)


def test_version():
    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0 and re.match(r"dgx, version \d+\.\d+", res.output)


def test_runtime_failure_is_one_line_and_debug_shows_the_traceback(tmp_path):
    cfg = tmp_path / "missing_model.yaml"
    cfg.write_text(f"model: {{name: shapes, path: {tmp_path / 'no_such_model'}}}\neval: {{max_prompts: 1}}\n")
    res = CliRunner().invoke(main, ["eval", str(cfg)])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code != 0 and lines[-1].startswith("error: ") and "no_such_model" in lines[-1]
    assert "Traceback" not in res.output
    debug = CliRunner().invoke(main, ["--debug", "eval", str(cfg)])
    assert debug.exit_code != 0 and debug.exception is not None and not isinstance(debug.exception, SystemExit)


def test_a_file_system_failure_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("x")
    res = CliRunner().invoke(
        main, ["calibrate", str(ROOT / "configs/shapes_quick.yaml"), "--out", str(tmp_path / "a_file" / "below")]
    )
    assert res.exit_code != 0 and res.output.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in res.output


def test_importing_the_models_prints_no_third_party_warning():
    """dgx's modules that import diffusers' SD3 and FLUX pipelines print nothing, and the start-up (the CLI, a
    config's validation) does not import transformers at all."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_VERBOSITY")}
    code = (
        "import sys, dgx.grpo.cli, dgx.grpo.config, dgx.sampler; assert 'transformers' not in sys.modules; "
        "import dgx.sampler.tiny, dgx.sampler.architectures"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_loading_a_model_prints_no_torchvision_warning():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_VERBOSITY")}
    code = (
        "from dgx.grpo.build import resolve_path; from dgx.sampler import SD3Model; "
        "SD3Model.from_pretrained(resolve_path('pkg://dgx.rewards.shapes/weights'), max_sequence_length=0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "torchvision" not in res.stderr and "warn" not in res.stderr.lower(), res.stderr


def test_help_lists_the_commands_in_the_order_of_the_work_with_whole_summaries():
    from dgx.grpo.cli import WORKFLOW

    out = CliRunner().invoke(main, ["--help"], terminal_width=200).output
    listed = re.findall(r"^  ([a-z-]+) {2,}", out.split("Commands:")[1], flags=re.M)
    assert listed == list(WORKFLOW) and set(listed) == set(main.commands)
    listing = " ".join(out.split("Commands:")[1].split())
    for name, cmd in main.commands.items():  # each summary whole, not cut short
        assert " ".join(cmd.get_short_help_str(limit=1000).split()) in listing, name
    assert "[default: runs/rehearsal]" in CliRunner().invoke(main, ["rehearse", "--help"], terminal_width=200).output


def imported_by(*args: str) -> set[str]:
    """The heavy libraries imported by running `dgx ARGS` in a fresh interpreter."""
    code = (
        "import sys\nfrom dgx.grpo.cli import main\ntry:\n    main([{}])\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'diffusers', 'transformers', 'peft', 'accelerate')\n"
        "print(' '.join(m for m in heavy if m in sys.modules), file=sys.stderr)"
    ).format(", ".join(repr(a) for a in args))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return set(res.stderr.strip().splitlines()[-1].split()) if res.stderr.strip() else set()


def test_registry_imports_no_model_library_and_validate_only_torch():
    """`dgx registry` reads the registry files only; `dgx validate` imports what checking the components' signatures
    needs (torch, which the implementations' modules import), not diffusers, transformers, peft or accelerate."""
    assert imported_by("registry") == set()
    assert imported_by("validate", "configs/shapes_quick.yaml") == {"torch"}


def test_eval_checks_its_adapter_before_any_model_loads_or_folder_is_made(tmp_path):
    empty = tmp_path / "run_without_checkpoints"
    empty.mkdir()
    for adapter, says in ((tmp_path / "none", "no such folder"), (empty, "no adapter.safetensors")):
        out = tmp_path / "eval_out"
        res = CliRunner().invoke(
            main, ["eval", str(ROOT / "configs/shapes_quick.yaml"), "--adapter", str(adapter), "--out", str(out)]
        )
        assert res.exit_code == 2 and f"error: --adapter {adapter}: {says}" in res.output, res.output
        assert not out.exists()


def test_the_committed_references_are_current():
    """The config and registry references in docs/guide/ are generated from the code and committed (they read on
    GitHub too); after a change to the configs or the registry, `python scripts/docs_hooks.py` rewrites them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    for page in hooks.PAGES:
        text = (ROOT / page).read_text()
        assert all(f"<!-- /{name} -->" in text for name in hooks.GENERATED if f"<!-- {name} -->" in text)
        assert hooks.refresh(text) == text, f"{page} is out of date: run python scripts/docs_hooks.py"

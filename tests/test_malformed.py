"""A hostile user's inputs: every malformed config, registry, flag and folder is refused before any work, with one
line that names what and where, exit status non-zero and no traceback; the cases that need no model are caught by
`dgx validate` in well under 5 s each."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from dgx.grpo.cli import main

BASE = """model: {name: shapes}
sampler: {steps: 4, guidance: 2.0}
reward: {name: ink}
train: {iterations: 1, prompts_per_iter: 2, group_size: 2}
eval: {max_prompts: 2}
"""


def edit(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


def ablation(body: str) -> str:
    return "base:\n" + "".join(f"  {line}\n" for line in BASE.splitlines()) + body


# (case, config text, expected text of the error line); each is checked by `dgx validate FILE`
CONFIGS = [
    ("lr inf", edit("group_size: 2}", "group_size: 2, lr: .inf}"), "train.lr: Input should be a finite number"),
    ("lr nan", edit("group_size: 2}", "group_size: 2, lr: .nan}"), "train.lr: Input should be a finite number"),
    (
        "lr 1e30",
        edit("group_size: 2}", "group_size: 2, lr: 1.0e+30}"),
        "train.lr: Input should be less than or equal to 1",
    ),
    ("lr negative", edit("group_size: 2}", "group_size: 2, lr: -1.0e-4}"), "train.lr: Input should be greater than 0"),
    ("lr text", edit("group_size: 2}", "group_size: 2, lr: fast}"), "train.lr: Input should be a valid number"),
    ("iterations bool", edit("iterations: 1", "iterations: true"), "train.iterations: Value error, expected a number"),
    ("group_size bool", edit("group_size: 2", "group_size: false"), "train.group_size: Value error, expected a number"),
    ("guidance bool", edit("guidance: 2.0", "guidance: yes"), "sampler.guidance: Value error, expected a number"),
    ("init list with bool", edit("eval:", "calibrate: {init: [true, 1, 1, 1]}\neval:"), "calibrate.init: Value error"),
    (
        "group_size 1",
        edit("group_size: 2", "group_size: 1"),
        "train.group_size: Input should be greater than or equal to 2",
    ),
    ("steps 0", edit("steps: 4", "steps: 0"), "sampler.steps: Input should be greater than or equal to 1"),
    ("timestep_fraction 0", edit("group_size: 2}", "group_size: 2, timestep_fraction: 0}"), "train.timestep_fraction"),
    ("timestep_fraction 2", edit("group_size: 2}", "group_size: 2, timestep_fraction: 2}"), "train.timestep_fraction"),
    ("ema 1.5", edit("group_size: 2}", "group_size: 2, ema: 1.5}"), "train.ema.decay: Input should be less than 1"),
    ("clip_range 0", edit("eval:", "objective: {clip_range: 0}\neval:"), "objective.clip_range"),
    ("kl_beta negative", edit("eval:", "objective: {kl_beta: -1}\neval:"), "objective.kl_beta"),
    (
        "kl_beta in train",
        edit("group_size: 2}", "group_size: 2, kl_beta: 0.1}"),
        "train.kl_beta: the objective is its own node now: move train.kl_beta to `objective:",
    ),
    ("eps2 0", edit("eval:", "calibrate: {eps2: 0}\neval:"), "calibrate.eps2"),
    ("dtype float64", edit("name: shapes}", "name: shapes, dtype: float64}"), "model.dtype: Input should be"),
    ("device gpu", BASE + "device: gpu\n", "device: Input should be 'auto' or 'cpu'"),
    (
        "kl reverse",
        edit("eval:", "objective: {kl: reverse}\neval:"),
        "objective.kl: objective 'flow_grpo': Input should be",
    ),
    (
        "adv_std bad",
        edit("eval:", "objective: {adv_std: tag}\neval:"),
        "objective.adv_std: objective 'flow_grpo': Input",
    ),
    ("prompt_sampling bad", edit("group_size: 2}", "group_size: 2, prompt_sampling: tags}"), "train.prompt_sampling"),
    (
        "ode_steps text",
        edit("name: ink}", "name: ink}\ncredit: {name: dense_gain, ode_steps: all}"),
        "credit.ode_steps",
    ),
    (
        "ode_steps 0",
        edit("name: ink}", "name: ink}\ncredit: {name: dense_gain, ode_steps: 0}"),
        "credit.ode_steps: credit 'dense_gain': Input should be greater than or equal to 1 (got 0)",
    ),
    (
        "ode_steps > steps",
        edit("name: ink}", "name: ink}\ncredit: {name: dense_gain, ode_steps: 9}"),
        "credit.ode_steps: 9 must be 't' or between 1 and sampler.steps = 4",
    ),
    ("unknown top key", BASE + "trian: {}\n", "trian: unknown key; did you mean 'train'?"),
    (
        "unknown nested key",
        edit("group_size: 2}", "group_size: 2, lrr: 1.0e-3}"),
        "train.lrr: unknown key; did you mean 'lr'",
    ),
    ("unknown reward", edit("name: ink}", "name: pickscor}"), "reward.name: unknown reward 'pickscor'"),
    ("unknown model", edit("name: shapes}", "name: sd35}"), "model.name: unknown model 'sd35'"),
    ("unknown sampler", edit("steps: 4,", "name: sdee, steps: 4,"), "sampler.name: unknown sampler 'sdee'"),
    (
        "unknown noise",
        edit("guidance: 2.0}", "guidance: 2.0, noise: {name: calibrate}}"),
        "unknown noise 'calibrate'; did you mean 'calibrated'?",
    ),
    ("unknown credit", edit("name: ink}", "name: ink}\ncredit: {name: dense}"), "credit.name: unknown credit 'dense'"),
    (
        "unknown evaluation",
        edit("max_prompts: 2}", "max_prompts: 2, name: geneval_shape}"),
        "eval.name: unknown evaluation 'geneval_shape'",
    ),
    (
        "unknown weighted part",
        edit("name: ink}", "name: weighted, rewards: {a: inkk}, weights: {a: 1.0}}"),
        "reward.rewards.a: unknown reward 'inkk'",
    ),
    (
        "noise window reversed",
        edit("guidance: 2.0}", "guidance: 2.0, noise: {window: [3, 2]}}"),
        "sampler.noise.window: [3, 2] must satisfy 0 <= start < stop",
    ),
    (
        "sliding window with an unknown key",
        edit("guidance: 2.0}", "guidance: 2.0, noise: {window: {start: 0, stop: 2, shfit: 1}}}"),
        "sampler.noise.window.shfit: unknown key",
    ),
    (
        "drawn window that also slides",
        edit("guidance: 2.0}", "guidance: 2.0, noise: {window: {start: 0, stop: 2, shift: 1, draw: [0, 4]}}}"),
        "sampler.noise.window.draw: [0, 4]: a drawn window takes no shift",
    ),
    (
        "drawn window past the steps",
        edit("guidance: 2.0}", "guidance: 2.0, noise: {window: {start: 0, stop: 2, draw: [0, 9]}}}"),
        "sampler.noise.window.draw: [0, 9]: hi must be <= sampler.steps = 4",
    ),
    (
        "noise window too long",
        edit("guidance: 2.0}", "guidance: 2.0, noise: {window: [0, 9]}}"),
        "sampler.noise.window: [0, 9] must satisfy",
    ),
    (
        "noise window negative",
        edit("guidance: 2.0}", "guidance: 2.0, noise: {window: [-1, 2]}}"),
        "sampler.noise.window",
    ),
    ("noise a negative", edit("guidance: 2.0}", "guidance: 2.0, noise: {a: -0.7}}"), "sampler.noise.a"),
    (
        "ode sampler with noise",
        edit("steps: 4,", "name: ode, noise: {a: 0.5}, steps: 4,"),
        "sampler.name: the sampler 'ode' draws no noise",
    ),
    (
        "ode sampler calibrated",
        edit("steps: 4,", "name: ode, noise: {name: calibrated}, steps: 4,"),
        "the sampler 'ode' draws no noise",
    ),
    (
        "calibrate.init length",
        edit("eval:", "calibrate: {init: [0.5, 0.5]}\neval:"),
        "calibrate.init: has 2 values but sampler.steps is 4",
    ),
    (
        "calibrate.init negative",
        edit("eval:", "calibrate: {init: -0.5}\neval:"),
        "calibrate.init: psi values must be >= 0",
    ),
    (
        "lora target with space",
        edit("group_size: 2}", "group_size: 2, lora_targets: ['to q']}"),
        "train.lora_targets: expected module names",
    ),
    (
        "lora targets empty",
        edit("group_size: 2}", "group_size: 2, lora_targets: []}"),
        "train.lora_targets: expected module names",
    ),
    (
        "resolution 30",
        edit("name: shapes}", "name: shapes, resolution: 30}"),
        "model.resolution: model 'shapes': Input should be a multiple of 16",
    ),
    (
        "resolution negative",
        edit("name: shapes}", "name: shapes, resolution: -16}"),
        "model.resolution: model 'shapes': Input should be greater than 0",
    ),
    (
        "prompts file without path",
        BASE + "prompts: {name: file}\n",
        "prompts.path: prompt source 'file' needs 'path': give it in the config",
    ),
    (
        "prompts file missing",
        BASE + "prompts: {name: file, path: no_such_prompts.txt}\n",
        "prompts.path: prompt file 'no_such_prompts.txt' not found",
    ),
    (
        "prompts file empty",
        BASE + "prompts: {name: file, path: empty.txt}\n",
        "prompts.path: prompt file 'empty.txt' is empty",
    ),
    (
        "eval prompts missing",
        edit("eval: {max_prompts: 2}", "eval: {name: pickscore, max_prompts: 2, prompts_file: nope.jsonl}"),
        "eval.prompts_file: prompt file 'nope.jsonl' not found",
    ),
    ("duplicate top key", BASE + "model: {name: sd3}\n", "duplicate key 'model' (first at line 1)"),
    ("duplicate nested key", edit("iterations: 1,", "iterations: 1, iterations: 2,"), "duplicate key 'iterations'"),
    ("invalid YAML", BASE + "train: {lr: [1\n", "invalid YAML"),
    ("top level list", "- model\n- reward\n", "top level must be a mapping, got list"),
    ("empty file", "", "empty file"),
    ("seeds repeated", ablation("variants: {a: {}}\nseeds: [0, 0]\n"), "seeds: [0, 0] repeats a seed"),
    ("seeds empty", ablation("variants: {a: {}}\nseeds: []\n"), "seeds: empty"),
    ("seeds text", ablation("variants: {a: {}}\nseeds: [zero]\n"), "seeds: expected a list of integers"),
    ("seeds bool", ablation("variants: {a: {}}\nseeds: [true]\n"), "seeds: expected a list of integers"),
    ("variants a list", ablation("variants: [a, b]\n"), "variants: expected a mapping of name -> overrides"),
    ("variant name with space", ablation("variants: {'a b': {}}\n"), "variant names are 1 to 64 letters"),
    ("variant overrides a list", ablation("variants: {a: [1]}\n"), "variants.a: expected a mapping of overrides"),
    (
        "variant bad value",
        ablation("variants: {a: {train: {lr: .inf}}}\n"),
        "variants.a.train.lr: Input should be a finite number",
    ),
    (
        "ablation unknown key",
        ablation("varients: {a: {}}\n"),
        "varients: unknown top-level key of an ablation; did you mean 'variants'?",
    ),
    ("base a list", "base: [1]\nvariants: {a: {}}\n", "base: expected a mapping"),
    ("registry file missing", "registry: nope.yaml\n" + BASE, "nope.yaml: registry file not found"),
    (
        "registry impl does not import",
        "registry: reg_bad_impl.yaml\n" + edit("name: ink}", "name: mine}"),
        "reward.name: 'mine' (",
    ),
    (
        "registry invalid YAML",
        "registry: reg_invalid.yaml\n" + BASE,
        "reg_invalid.yaml: line 2, column 1: invalid YAML",
    ),
    ("registry unknown section", "registry: reg_section.yaml\n" + BASE, "unknown registry section 'reward'"),
    (
        "registry entry without impl",
        "registry: reg_no_impl.yaml\n" + BASE,
        "rewards.mine: needs an 'impl: module:attr' entry",
    ),
    (
        "YAML alias bomb",
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        + BASE,
        "line 6: expands to more than 100,000 values",
    ),
    ("YAML nested 100 deep", edit("iterations: 1", "iterations: " + "[" * 100 + "]" * 100), "nested more than 50"),
    ("YAML nested 5000 deep", edit("iterations: 1", "iterations: " + "[" * 5000 + "]" * 5000), "nested too deeply"),
    ("YAML recursive alias", "a: &a [*a]\n" + BASE, "nested more than 50 levels deep"),
    ("long unknown key", edit("group_size: 2}", "group_size: 2, " + "k" * 1000 + ": 1}"), "… (1002 characters)"),
    ("registry file a number", "registry: reg_int.yaml\n" + BASE, "a registry file is a mapping of sections, got int"),
    ("registry file a list", "registry: reg_list.yaml\n" + BASE, "a registry file is a mapping of sections, got list"),
    ("registry file binary", "registry: reg_binary.yaml\n" + BASE, "not a text file (a registry file is UTF-8 text)"),
    ("registry section a list", "registry: reg_section_list.yaml\n" + BASE, "rewards: a mapping of name -> entry"),
    ("registry impl a number", "registry: reg_impl_int.yaml\n" + BASE, "rewards.mine: needs an 'impl: module:attr'"),
    ("seed negative", BASE + "seed: -5\n", "seed: Input should be greater than or equal to 0"),
    ("seed huge", BASE + "seed: 18446744073709551616\n", "seed: Input should be less than 9223372036854775808"),
    (
        "seeds negative",
        ablation("variants: {a: {}}\nseeds: [0, -1]\n"),
        "seeds: -1 is not a seed; seeds lie in [0, 2^63)",
    ),
    ("variant named base", ablation("variants: {base: {}}\n"), "variants.base: 'base' is the base model's results"),
    ("variant name 300 long", ablation("variants: {" + "v" * 300 + ": {}}\n"), "variant names are 1 to 64 letters"),
    (
        "betas 2 and 3",
        edit("group_size: 2}", "group_size: 2, betas: [2, 0.9]}"),
        "train.betas.0: Input should be less than 1",
    ),
    (
        "eval guidance negative",
        edit("max_prompts: 2}", "max_prompts: 2, guidance: -3}"),
        "eval.guidance: Input should be",
    ),
    (
        "eval guidance 1e30",
        edit("max_prompts: 2}", "max_prompts: 2, guidance: 1.0e+30}"),
        "eval.guidance: Input should be",
    ),
    ("lora_alpha 1e9", edit("group_size: 2}", "group_size: 2, lora_alpha: 1000000000}"), "train.lora_alpha: Input"),
    ("eval images 1e9", edit("max_prompts: 2}", "max_prompts: 2, images_per_prompt: 1000000000}"), "eval.images_per"),
    ("resolution 100000", edit("name: shapes}", "name: shapes, resolution: 100000}"), "less than or equal to 8192"),
    (
        "warm-up longer than training",
        edit("group_size: 2}", "group_size: 2, lr_warmup: 5}"),
        "train.lr_warmup: 5 warm-up",
    ),
    ("prompt file with a NUL", BASE + "prompts: {name: file, path: nul.txt}\n", "'nul.txt', line 2: a NUL byte"),
    ("prompt file bad JSONL", BASE + "prompts: {name: file, path: bad.jsonl}\n", "'bad.jsonl', line 2: not JSON"),
    (
        "prompt file without prompt",
        BASE + "prompts: {name: file, path: noprompt.jsonl}\n",
        "'noprompt.jsonl', line 1: not an object with a 'prompt' string",
    ),
    (
        "by_tag on a text file",
        edit("group_size: 2}", "group_size: 2, prompt_sampling: by_tag}") + "prompts: {name: file, path: ok.txt}\n",
        "'ok.txt' has no tags: train.prompt_sampling: by_tag needs a JSONL file",
    ),
    (
        "by_tag without a tag",
        edit("group_size: 2}", "group_size: 2, prompt_sampling: by_tag}")
        + "prompts: {name: file, path: bad_tag.jsonl}\n",
        "'bad_tag.jsonl', line 2: no 'tag'",
    ),
    ("registry null", "registry: null\n" + BASE, "registry: a registry file or a list of them, got None"),
    ("control character", "\x1f" + BASE, "invalid YAML: unacceptable character #x001f"),
]

REGISTRIES = {
    "reg_bad_impl.yaml": "rewards:\n  mine: {impl: 'no_such_module:Reward', description: x}\n",
    "reg_invalid.yaml": "rewards: {mine: [\n",
    "reg_section.yaml": "reward:\n  mine: {impl: 'dgx.rewards.ink:Ink'}\n",
    "reg_no_impl.yaml": "rewards:\n  mine: {description: x}\n",
    "reg_int.yaml": "42\n",
    "reg_list.yaml": "- rewards\n- credit\n",
    "reg_section_list.yaml": "rewards: [a, b]\n",
    "reg_impl_int.yaml": "rewards:\n  mine: {impl: 3}\n",
}


def one_line_error(output: str) -> str:
    """The error line of a failed command (exactly one line starts with 'error:'), checked to be a message."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n")
    for name, text in REGISTRIES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "reg_binary.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "nul.txt").write_text("a red circle\ntwo\x00squares\n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a red circle"}\n{"prompt": "two squares"\n')
    (tmp_path / "noprompt.jsonl").write_text('{"text": "a red circle"}\n')
    (tmp_path / "ok.txt").write_text("a red circle\n")
    (tmp_path / "bad_tag.jsonl").write_text('{"prompt": "a", "tag": "x"}\n{"prompt": "b"}\n')
    return tmp_path


@pytest.mark.parametrize("case,text,expected", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_a_malformed_config_is_one_line_from_validate(folder, case, text, expected):
    (folder / "cfg.yaml").write_text(text)
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["validate", "cfg.yaml"])
    seconds = time.perf_counter() - t0
    assert res.exit_code == 2, res.output
    line = one_line_error(res.output)
    assert expected in line, line
    assert "cfg.yaml" in line or "reg_" in line or "nope.yaml" in line  # names where
    assert seconds < 5


# (case, files to write, command, expected text); commands other than validate, still before any model loads
# (or with the tiny shapes model only)
COMMANDS = [
    ("binary config", {"cfg.bin": b"\x00\xff\x10binary"}, ["validate", "cfg.bin"], "cfg.bin: not a text file"),
    (
        "png config",
        {"cfg.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"},
        ["validate", "cfg.png"],
        "cfg.png: not a text file",
    ),
    ("config missing", {}, ["validate", "missing.yaml"], "missing.yaml: file not found"),
    ("config is a folder", {"sub/x.txt": b""}, ["validate", "sub"], "sub: is a folder, not a file"),
    (
        "--set without =",
        {"cfg.yaml": BASE.encode()},
        ["validate", "cfg.yaml", "--set", "train.lr"],
        "expected KEY=VALUE",
    ),
    (
        "--set unknown key",
        {"cfg.yaml": BASE.encode()},
        ["validate", "cfg.yaml", "--set", "train.lrr=1"],
        "--set train.lrr: unknown key",
    ),
    (
        "--set bad YAML",
        {"cfg.yaml": BASE.encode()},
        ["validate", "cfg.yaml", "--set", "train.lr=[1"],
        "--set 'train.lr=[1': line 1, column 3: invalid YAML",
    ),
    (
        "--set inf",
        {"cfg.yaml": BASE.encode()},
        ["validate", "cfg.yaml", "--set", "train.lr=.inf"],
        "--set train.lr: Input should be a finite number",
    ),
    (
        "run --only unknown",
        {"cfg.yaml": BASE.encode()},
        ["run", "cfg.yaml", "--only", "nope"],
        "--only nope: no such variant",
    ),
    (
        "calibrate --variant unknown",
        {"cfg.yaml": BASE.encode()},
        ["calibrate", "cfg.yaml", "--variant", "nope"],
        "no variant 'nope'",
    ),
    (
        "run --out under a file",
        {"cfg.yaml": BASE.encode(), "afile": b"x"},
        ["run", "cfg.yaml", "--out", "afile/out"],
        "--out afile/out: cannot write there",
    ),
    (
        "eval --out under a file",
        {"cfg.yaml": BASE.encode(), "afile": b"x"},
        ["eval", "cfg.yaml", "--out", "afile/out"],
        "--out afile/out: cannot write there",
    ),
    (
        "eval --adapter missing",
        {"cfg.yaml": BASE.encode()},
        ["eval", "cfg.yaml", "--adapter", "no_run"],
        "--adapter no_run: no such folder",
    ),
    (
        "eval --adapter without an adapter",
        {"cfg.yaml": BASE.encode(), "no_run/x.txt": b""},
        ["eval", "cfg.yaml", "--adapter", "no_run"],
        "no_run: no adapter.safetensors found",
    ),
    (
        "run --resume --overwrite",
        {"cfg.yaml": BASE.encode()},
        ["run", "cfg.yaml", "--resume", "--overwrite"],
        "--resume continues the runs in --out and --overwrite replaces them: give one",
    ),
    (
        "run over earlier results",
        {"cfg.yaml": BASE.encode(), "out/base/seed_0/eval/summary.json": b"{}"},
        ["run", "cfg.yaml", "--out", "out"],
        "out holds earlier results (base/seed_0): --resume continues them, --overwrite replaces them",
    ),
    (
        "run --resume without the run's config.yaml",
        {"cfg.yaml": BASE.encode(), "out/default/seed_0/checkpoints/latest": b"iter_00000"},
        ["run", "cfg.yaml", "--out", "out", "--resume"],
        "config.yaml is missing, so --resume cannot compare the settings",
    ),
    (
        "run --resume with a damaged config.yaml",
        {"cfg.yaml": BASE.encode(), "out/default/seed_0/config.yaml": b"train: ["},
        ["run", "cfg.yaml", "--out", "out", "--resume"],
        "config.yaml is damaged, so --resume cannot compare the settings",
    ),
    (
        "run a batch beyond the machine's memory",
        {"cfg.yaml": edit("group_size: 2}", "group_size: 1000000000}").encode()},
        ["run", "cfg.yaml"],
        "or accept it with --accept-memory-estimate",
    ),
    (
        "calibrate over a finished calibration",
        {"cfg.yaml": BASE.encode(), "cal/psi.json": b"{}"},
        ["calibrate", "cfg.yaml", "--out", "cal"],
        "cal holds a finished calibration (psi.json): --resume continues it",
    ),
    (
        "calibrate --resume --overwrite",
        {"cfg.yaml": BASE.encode()},
        ["calibrate", "cfg.yaml", "--resume", "--overwrite"],
        "give one",
    ),
    (
        "push an invalid repo id",
        {"norun/x.txt": b""},
        ["push", "norun", "--repo-id", "not a repo id!", "--dry-run"],
        "--repo-id 'not a repo id!'",
    ),
    ("registry --file missing", {}, ["registry", "--file", "nope.yaml"], "nope.yaml: registry file not found"),
    (
        "--set seed on an ablation",
        {"abl.yaml": ablation("variants: {a: {}}\n").encode()},
        ["validate", "abl.yaml", "--set", "seed=7"],
        "--set seed: abl.yaml is an ablation, whose runs take its seeds: list",
    ),
    ("registry --section unknown", {}, ["registry", "--section", "reward"], "unknown section 'reward'"),
    (
        "registry --file malformed",
        {"r.yaml": b"rewards: {x: ["},
        ["registry", "--file", "r.yaml"],
        "r.yaml: line 1, column 15: invalid YAML",
    ),
    ("push a folder that is no run", {"norun/x.txt": b""}, ["push", "norun", "--repo-id", "a/b", "--dry-run"], "norun"),
    (
        "bench outside the repository (no task config)",
        {},
        ["bench", "--task", "mechanism", "--report-only"],
        "configs/shapes_mechanism.yaml: file not found",
    ),
]


@pytest.mark.parametrize("case,files,args,expected", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_malformed_command_is_one_line(folder, case, files, args, expected):
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0, res.output
    line = one_line_error(res.output)
    assert expected in line, line


def test_a_model_path_is_checked_before_any_model_loads(folder):
    (folder / "model").mkdir()
    for path, ok in (("./no/such/model", False), ("/no/such/model", False), ("./model", True), ("org/name", True)):
        (folder / "cfg.yaml").write_text(edit("model: {name: shapes}", f"model: {{name: shapes, path: {path}}}"))
        res = CliRunner().invoke(main, ["validate", "cfg.yaml"])
        assert (res.exit_code == 0) == ok, res.output
        assert ok or f"model.path: '{path}': no such folder" in one_line_error(res.output)


def test_the_table_covers_at_least_sixty_inputs():
    assert len(CONFIGS) + len(COMMANDS) >= 60


def test_implausible_sizes_warn_but_validate(folder):
    (folder / "cfg.yaml").write_text(edit("group_size: 2}", "group_size: 1000000000}"))
    res = CliRunner().invoke(main, ["validate", "cfg.yaml"])
    assert res.exit_code == 0 and "warning: " in res.output and "implausibly large" in res.output
    assert "one training iteration needs at least" in res.output  # more than this machine's memory: dgx run refuses


def test_yaml_merge_keys_share_a_block_between_variants(folder):
    (folder / "cfg.yaml").write_text(
        ablation("variants:\n  a: {}\n  b:\n    sampler: {<<: *s, guidance: 3.0}\n").replace(
            "  sampler: {steps", "  sampler: &s {steps"
        )
    )
    res = CliRunner().invoke(main, ["validate", "cfg.yaml", "--show"])
    assert res.exit_code == 0 and "a, b" in res.output, res.output
    assert res.output.count("guidance: 3.0") == 1 and res.output.count("steps: 4") == 2


def test_zero_width_characters_in_prompts_are_a_warning(folder):
    (folder / "odd.txt").write_text("a red circle\ntwo\u200bsquares\n")
    (folder / "cfg.yaml").write_text(BASE + "prompts: {name: file, path: odd.txt}\n")
    res = CliRunner().invoke(main, ["validate", "cfg.yaml"])
    assert res.exit_code == 0 and "prompts.path: odd.txt, line 2: zero-width or control characters" in res.output


def test_validate_imports_implementations_but_never_calls_them(folder):
    """A config is code (`module:attr`, registry `impl`): validating imports it, building runs it; validate builds
    nothing."""
    (folder / "loud.py").write_text(
        "from pathlib import Path\n\nclass Loud:\n    def __init__(self, level: int = 1):\n"
        "        Path('called').write_text('x')\n\n    def __call__(self, images, prompts, metadata=None):\n"
        "        return images.mean((1, 2, 3))\n"
    )
    (folder / "cfg.yaml").write_text(edit("name: ink}", "name: 'loud:Loud', level: 3}"))
    res = CliRunner().invoke(main, ["validate", "cfg.yaml"])
    assert res.exit_code == 0, res.output
    assert not (folder / "called").exists()


def test_a_valid_config_still_validates(folder):
    (folder / "cfg.yaml").write_text(BASE)
    res = CliRunner().invoke(main, ["validate", "cfg.yaml"])
    assert res.exit_code == 0 and "OK" in res.output
    assert Path("cfg.yaml").is_file()

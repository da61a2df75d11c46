"""Config loading: malformed files give precise errors; variants resolve by deep merge."""

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from dgx.grpo.cli import main
from dgx.grpo.config import deep_merge, load
from dgx.grpo.errors import ConfigError
from dgx.grpo.registry import Registry

GOOD = """
base:
  sampler: {steps: 10, noise: {name: uniform, a: 0.7}}
  reward: {name: geneval_shapes}
  train: {group_size: 8, lr: 3.0e-4}
variants:
  flow_grpo: {}
  dense:
    credit: {name: dense_gain, ode_steps: t}
    sampler: {noise: {name: calibrated}}
  n2: {credit: {name: dense_gain, ode_steps: 2}, train: {lr: 1.0e-4}}
seeds: [0, 1]
"""


def write(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_valid_ablation_resolves_variants(tmp_path):
    abl = load(write(tmp_path, GOOD))
    assert list(abl.variants) == ["flow_grpo", "dense", "n2"] and abl.seeds == [0, 1]
    d, n2, fg = abl.variants["dense"], abl.variants["n2"], abl.variants["flow_grpo"]
    assert (fg.credit.name, fg.sampler.noise.name, fg.sampler.noise.args) == ("sparse", "uniform", {"a": 0.7})
    assert (d.credit.name, d.credit.args, d.sampler.noise.name, d.sampler.steps) == (
        "dense_gain",
        {"ode_steps": "t"},
        "calibrated",
        10,
    )
    assert d.sampler.noise.args == {}  # a node whose name changes is replaced whole: uniform's `a` is not calibrated's
    assert (n2.credit.args["ode_steps"], n2.train.lr, n2.train.group_size) == (2, 1e-4, 8)  # the rest merges
    assert fg.train.lr == 3e-4
    assert abl.variant() == ("flow_grpo", fg) and abl.variant("n2") == ("n2", n2)
    with pytest.raises(ConfigError, match="no variant 'dens'; did you mean 'dense'"):
        abl.variant("dens")


def test_deep_merge():
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"c": 3}, "d": [2]}) == {"a": {"b": 1, "c": 3}, "d": [2]}
    node = {"n": {"name": "uniform", "a": 0.5}}
    assert deep_merge(node, {"n": {"a": 0.3}}) == {"n": {"name": "uniform", "a": 0.3}}  # same component: merged
    assert deep_merge(node, {"n": {"name": "uniform", "a": 0.3}}) == {"n": {"name": "uniform", "a": 0.3}}
    assert deep_merge(node, {"n": {"name": "constant"}}) == {"n": {"name": "constant"}}  # another one: replaced


BAD = [
    (
        "unknown component",
        "reward: {name: pickscor}",
        r"cfg.yaml: reward.name: unknown reward 'pickscor'; did you mean 'pickscore'",
    ),
    (
        "unknown credit",
        "credit: {name: dense_gian}",
        r"credit.name: unknown credit 'dense_gian'; did you mean 'dense_gain'",
    ),
    (
        "the credit keys of the former reward node",
        "reward: {name: ink, credit: dense_gain, ode_steps: t}",
        r"reward.credit: the credit rule is its own node now: .*`credit: \{name: dense_gain, ode_steps: t\}`",
    ),
    (
        "an argument the component does not take",
        "reward: {name: ink, backgrund: 0.5}",
        r"reward.backgrund: reward 'ink' takes no 'backgrund'; did you mean 'background'\? \(valid: background\)",
    ),
    (
        "an argument of the wrong type",
        "reward: {name: ink, background: dark}",
        r"reward.background: reward 'ink': Input should be a valid number.*\(got 'dark'\)",
    ),
    (
        "a credit argument the rule does not take",
        "credit: {name: sparse, ode_steps: 2}",
        r"credit.ode_steps: credit 'sparse' takes no 'ode_steps' \(valid: chunk\)",
    ),
    (
        "unknown noise",
        "sampler: {noise: {name: calibrate}}",
        r"sampler.noise.name: unknown noise 'calibrate'; did you mean 'calibrated'",
    ),
    ("unknown sampler", "sampler: {name: sdee}", r"sampler.name: unknown sampler 'sdee'; did you mean 'sde'"),
    ("unknown model", "model: {name: sd35}", r"model.name: unknown model 'sd35'; did you mean 'sd3'"),
    (
        "unknown eval",
        "eval: {name: shapes_genval}",
        r"eval.name: unknown evaluation 'shapes_genval'; did you mean 'shapes_geneval'",
    ),
    ("unknown key", "train: {learning_rate: 0.1}", r"train.learning_rate: unknown key.*valid: .*\blr\b"),
    (
        "unknown noise argument",
        "sampler: {noise: {level: 0.7}}",
        r"sampler.noise.level: noise 'uniform' takes no 'level'",
    ),
    ("unknown section", "trainer: {lr: 1}", r"cfg.yaml: trainer: unknown key; did you mean 'train'"),
    ("wrong type", "train: {group_size: many}", r"train.group_size: Input should be a valid integer.*\(got 'many'\)"),
    (
        "out of range",
        "train: {group_size: 1}",
        r"train.group_size: Input should be greater than or equal to 2 \(got 1\)",
    ),
    (
        "bad ode_steps",
        "credit: {name: dense_gain, ode_steps: tt}",
        r"credit.ode_steps: credit 'dense_gain': .*\(got 'tt'\)",
    ),
    (
        "bad dtype",
        "model: {dtype: fp8}",
        r"model.dtype: Input should be 'float32', 'bfloat16' or 'float16' \(got 'fp8'\)",
    ),
    (
        "negative noise",
        "sampler: {noise: {a: -1}}",
        r"sampler.noise.a: noise 'uniform': Input should be greater than or equal to 0 \(got -1\)",
    ),
    (
        "ode with calibrated",
        "sampler: {name: ode, noise: {name: calibrated}}",
        r"sampler.name: the sampler 'ode' draws no noise",
    ),
    (
        "weighted unknown",
        "reward: {name: weighted, rewards: {pick: pickscore, look: aesthtic}, weights: {pick: 1, look: 0.5}}",
        r"reward.rewards.look: unknown reward 'aesthtic'; did you mean 'aesthetic'",
    ),
]


ABL_BAD = [
    (
        "bad variant key",
        "base: {}\nvariants:\n  dense: {train: {lrr: 0.1}}\n",
        r"variants.dense.train.lrr: unknown key; did you mean 'lr'",
    ),
    (
        "bad variant value",
        "base: {}\nvariants:\n  dense: {sampler: {steps: 0}}\n",
        r"variants.dense.sampler.steps: Input should be greater than or equal to 1 \(got 0\)",
    ),
    (
        "error in base",
        "base: {sampler: {steps: x}}\nvariants:\n  a: {}\n",
        r"base.sampler.steps: .*valid integer.*\(got 'x'\)",
    ),
    (
        "bad variant name",
        "base: {}\nvariants:\n  'dense grpo': {}\n",
        r"variants.dense grpo: variant names are 1 to 64",
    ),
    ("variant not a mapping", "base: {}\nvariants:\n  a: 3\n", r"variants.a: expected a mapping of overrides, got 3"),
    (
        "variants not a mapping",
        "base: {}\nvariants: [a, b]\n",
        r"variants: expected a mapping of name -> overrides, got list",
    ),
    ("bad seeds", "base: {}\nseeds: [0, x]\n", r"seeds: expected a list of integers, got \[0, 'x'\]"),
    (
        "unknown top level",
        "base: {}\nvariant: {}\n",
        r"variant: unknown top-level key of an ablation; did you mean 'variants'",
    ),
]


@pytest.mark.parametrize("case,body,msg", BAD + ABL_BAD, ids=[b[0] for b in BAD + ABL_BAD])
def test_malformed_config(tmp_path, case, body, msg):
    with pytest.raises(ConfigError, match=msg):
        load(write(tmp_path, body))


def test_bad_yaml_missing_and_empty(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg.yaml: line \d+, column \d+: invalid YAML"):
        load(write(tmp_path, "train:\n  lr: [1, 2\n"))
    with pytest.raises(ConfigError, match=r"nope.yaml: file not found"):
        load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"empty file"):
        load(write(tmp_path, ""))
    with pytest.raises(ConfigError, match=r"top level must be a mapping, got list"):
        load(write(tmp_path, "- a\n- b\n"))


def test_user_registry_file(tmp_path, monkeypatch):
    reg = write(
        tmp_path,
        """
    rewards:
      brightness:
        impl: dgx_test_helpers:Brightness
        description: mean pixel value
    """,
        "my_registry.yaml",
    )
    cfg = write(tmp_path, "registry: my_registry.yaml\nreward: {name: brightness}\n")
    assert load(cfg).variants["default"].reward.name == "brightness"
    with pytest.raises(ConfigError, match="unknown reward 'brightness'"):
        load(write(tmp_path, "reward: {name: brightness}\n", "plain.yaml"))
    monkeypatch.setenv("DGX_REGISTRY", str(reg))
    assert "brightness" in Registry().names("rewards")
    res = CliRunner().invoke(main, ["registry", "--section", "rewards"])
    assert res.exit_code == 0 and "brightness" in res.output and "my_registry.yaml" in res.output


def test_every_builtin_registry_entry_imports():
    reg = Registry()
    for section in reg.sections.values():
        for entry in section.values():
            assert callable(entry.load()), entry.impl


def test_cli_validate_and_help(tmp_path):
    r = CliRunner()
    ok = r.invoke(main, ["validate", str(write(tmp_path, GOOD)), "--show"])
    assert ok.exit_code == 0 and "3 variant(s) x 2 seed(s)" in ok.output and "name: dense_gain" in ok.output
    assert "# credit dense_gain takes: ode_steps: int >= 1 | Literal['t'] = 't', chunk: int >= 1 = 256" in ok.output
    assert "# sampler.noise uniform takes: a: float >= 0 = 0.7" in ok.output
    bad = r.invoke(main, ["validate", str(write(tmp_path, "reward: {name: pickscor}", "bad.yaml"))])
    assert bad.exit_code == 2 and "did you mean 'pickscore'" in bad.output
    for cmd in ["run", "calibrate", "eval", "push", "registry", "validate"]:
        h = r.invoke(main, [cmd, "--help"])
        assert h.exit_code == 0 and "Usage" in h.output


def test_set_overrides_every_variant_last_and_errors_name_the_flag(tmp_path):
    from dgx.grpo.config import parse_sets

    sets = parse_sets(
        ["train.lr=1e-3", "sampler.noise={name: uniform, a: 0.5}", "reward.partial=false", "seeds_x.y=[1, 2]"]
    )
    assert sets == {
        "train": {"lr": 1e-3},
        "sampler": {"noise": {"name": "uniform", "a": 0.5}},
        "reward": {"partial": False},
        "seeds_x": {"y": [1, 2]},
    }
    del sets["seeds_x"]
    abl = load(write(tmp_path, GOOD), overrides=sets)
    for cfg in abl.variants.values():  # the command line wins over base and over the variant (n2 set its own lr)
        assert (cfg.train.lr, cfg.sampler.noise.name, cfg.sampler.noise.a, cfg.reward.partial) == (
            1e-3,
            "uniform",
            0.5,
            False,
        )
    assert abl.variants["n2"].credit.args["ode_steps"] == 2 and abl.variants["flow_grpo"].train.group_size == 8
    for bad, msg in [
        (["train.lr"], "expected KEY=VALUE"),
        (["train..lr=1"], "expected KEY=VALUE"),
        (["train=3", "train.lr=1"], "train was already set to a value"),
        (["train.lr=[1"], "line 1, column 3: invalid YAML"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            parse_sets(bad)
    with pytest.raises(ConfigError, match=r"--set train\.lrr: unknown key; did you mean 'lr'") as e:
        load(write(tmp_path, GOOD), overrides=parse_sets(["train.lrr=1"]))
    assert "variants." not in str(e.value)
    with pytest.raises(ConfigError, match=r"--set train\.lr: .*got 'fast'"):
        load(write(tmp_path, GOOD), overrides=parse_sets(["train.lr=fast"]))
    with pytest.raises(
        ConfigError, match=r"variants\.n2\.train\.lr: .*got 'x'"
    ):  # a key --set did not touch keeps its place
        load(write(tmp_path, GOOD.replace("lr: 1.0e-4", "lr: x")), overrides=parse_sets(["train.group_size=4"]))
    r = CliRunner().invoke(main, ["validate", str(write(tmp_path, GOOD)), "--show", "--set", "train.group_size=12"])
    assert r.exit_code == 0 and r.output.count("group_size: 12") == 3
    r = CliRunner().invoke(main, ["validate", str(write(tmp_path, GOOD)), "--set", "sampler.noise.name=calibratd"])
    assert r.exit_code == 2 and "--set sampler.noise.name" in r.output and "did you mean 'calibrated'" in r.output


ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(
    str(p.relative_to(ROOT))
    for p in [*ROOT.glob("configs/*.yaml"), *ROOT.glob("research/experiments/**/*.yaml")]
    if p.name != "registry.yaml"
)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_validate(name, tmp_path, monkeypatch):
    """Every config in configs/ and research/experiments/ loads on a fresh clone (registry files, component names,
    keys): a prompt set not fetched yet is a warning that names the `dgx data` command; a local model folder a research
    script trains first is named when missing."""
    import re

    text = (ROOT / name).read_text()
    local_model = re.search(r"path: (runs/[\w/.-]+)", text)
    monkeypatch.chdir(tmp_path if local_model else ROOT)  # model paths are relative to the working directory
    if local_model:
        with pytest.raises(ConfigError, match=f"model.path: '{local_model[1]}': no such folder"):
            load(ROOT / name)
        (tmp_path / local_model[1]).mkdir(parents=True)
    abl = load(ROOT / name)
    assert abl.variants and abl.seeds
    for data_set in set(re.findall(r"data://(\w+)", text)):
        assert any(f"data set {data_set!r} is not fetched yet: `dgx data {data_set}`" in w for w in abl.warnings)


def test_cli_works_from_any_directory(tmp_path, monkeypatch):
    from pathlib import Path

    cfg = Path(__file__).resolve().parents[1] / "configs" / "shapes_quick.yaml"
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["validate", str(cfg)])
    assert res.exit_code == 0 and "2 variant(s)" in res.output
    res = CliRunner().invoke(main, ["registry", "--section", "models"])
    assert res.exit_code == 0 and "shapes" in res.output and "sd3" in res.output


def test_soft_credit_builds_for_geneval_and_is_refused_elsewhere(tmp_path):
    from dgx.grpo.build import build_reward

    soft = load(write(tmp_path, GOOD.replace("{name: geneval_shapes}", "{name: geneval_shapes, soft: true}"))).variants[
        "flow_grpo"
    ]
    assert build_reward(soft.reward, Registry()).soft is True
    with pytest.raises(ConfigError, match="reward.soft: reward 'pickscore' takes no 'soft'"):
        load(write(tmp_path, "reward: {name: pickscore, soft: true}\n", "pick.yaml"))


def test_noise_window_builds_and_is_checked_against_the_steps(tmp_path):
    from dgx.grpo.build import build_schedule
    from dgx.sampler import UniformNoise, Windowed

    cfg = load(write(tmp_path, GOOD.replace("a: 0.7}", "a: 0.7, window: [0, 3]}"))).variants["flow_grpo"]
    assert build_schedule(cfg, Registry()) == Windowed(UniformNoise(0.7), 0, 3)
    from dgx.grpo.config import WindowConfig

    sliding = load(write(tmp_path, GOOD.replace("a: 0.7}", "a: 0.7, window: {start: 0, stop: 2, shift: 1, every: 5}}")))
    assert build_schedule(sliding.variants["flow_grpo"], Registry()) == Windowed(UniformNoise(0.7), 0, 2, 1, 5, True)
    bad = cfg.model_copy(deep=True)
    bad.sampler.noise.window = WindowConfig(start=3, stop=12)
    with pytest.raises(ConfigError, match=r"window = \[3, 12\].*sampler.steps = 10"):
        build_schedule(bad, Registry())


def test_registry_module_beside_the_registry_file_and_builder_defaults(tmp_path):
    """impl modules may sit next to a user registry file; extra model `defaults` and model.resolution
    reach the builder as keywords."""
    from dgx.grpo.build import build_model, build_reward

    (tmp_path / "my_parts.py").write_text(
        "import torch\n"
        "class Bright:\n"
        "    def __init__(self, **_): pass\n"
        "    def __call__(self, images, prompts, metadata=None): return images.flatten(1).mean(1)\n"
        "def model(path='', dtype=None, device='cpu', max_sequence_length=0, resolution=None, width=1):\n"
        "    return dict(path=path, msl=max_sequence_length, resolution=resolution, width=width)\n"
    )
    write(
        tmp_path,
        """
    rewards:
      bright: {impl: "my_parts:Bright"}
    models:
      wide: {impl: "my_parts:model", defaults: {max_sequence_length: 7, width: 3}}
    """,
        "reg.yaml",
    )
    cfg = load(write(tmp_path, "registry: reg.yaml\nmodel: {name: wide, resolution: 64}\nreward: {name: bright}\n"))
    run, reg = cfg.variants["default"], cfg.registry()
    assert build_reward(run.reward, reg)(torch.full((2, 3, 4, 4), 0.25), ["a", "b"]).tolist() == [0.25, 0.25]
    assert build_model(run, reg) == {"path": "", "msl": 7, "resolution": 64, "width": 3}


def test_an_argument_a_reward_does_not_take_is_a_config_error_naming_the_key(tmp_path):
    from dgx.grpo.build import build_reward

    (tmp_path / "reg.yaml").write_text("rewards:\n  inky: {impl: 'dgx.rewards.ink:Ink', description: x}\n")
    cfg = load(write(tmp_path, "registry: reg.yaml\nreward: {name: inky}\n")).variants["default"]
    (tmp_path / "reg.yaml").write_text(
        "rewards:\n  inky: {impl: 'dgx.rewards.ink:Ink', description: x, defaults: {background: 0.5, colour: 3}}\n"
    )
    with pytest.raises(ConfigError, match=r"'inky' \(.*reg.yaml registry\): defaults colour are not arguments of"):
        load(tmp_path / "cfg.yaml")  # dgx validate finds it
    with pytest.raises(  # and a registry changed since validation, at build time
        ConfigError,
        match=r"rewards.inky.defaults.colour \(.*reg.yaml\): 'inky' takes no 'colour' \(it takes background\)",
    ):
        build_reward(cfg.reward, Registry([tmp_path / "reg.yaml"]))
    for key, value in (("path", "some/model"), ("processor_path", "x"), ("partial", False)):
        with pytest.raises(ConfigError, match=f"reward.{key}: reward 'ink' takes no '{key}'"):
            load(write(tmp_path, f"reward: {{name: ink, {key}: {value}}}\n", "c.yaml"))
    ok = load(write(tmp_path, "reward: {name: ink}\n", "ok.yaml")).variants["default"]
    assert (
        build_reward(ok.reward, Registry(), device="cpu").reward.background == 0.6
    )  # ink takes no device: none is given
    with pytest.raises(TypeError):
        from dgx.rewards.pickscore import PickScore

        PickScore(pth="typo")  # the classes themselves take only their own arguments


def test_a_package_adds_components_through_the_entry_point(tmp_path, monkeypatch):
    """A third-party package registers components with no registry file, by a ``dgx.registry`` entry point."""
    site = tmp_path / "site"
    (site / "dgx_extra-0.1.dist-info").mkdir(parents=True)
    (site / "dgx_extra-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: dgx-extra\nVersion: 0.1\n")
    (site / "dgx_extra-0.1.dist-info" / "entry_points.txt").write_text("[dgx.registry]\nextra = dgx_extra_mod:TABLE\n")
    (site / "dgx_extra_mod.py").write_text(
        "TABLE = {'rewards': {'half': {'impl': 'dgx.rewards.ink:Ink', 'description': 'ink from 0.5',"
        " 'defaults': {'background': 0.5}}}}\n"
    )
    monkeypatch.syspath_prepend(str(site))
    reg = Registry()
    assert reg.sections["rewards"]["half"].source == "dgx-extra (dgx_extra_mod:TABLE)"
    assert "dgx-extra (entry point)" in reg.sources and "dgx-rewards (entry point)" in reg.sources
    cfg = load(write(tmp_path, "reward: {name: half}\n")).variants["default"]
    from dgx.grpo.build import build_reward

    assert build_reward(cfg.reward, Registry()).reward.background == 0.5
    res = CliRunner().invoke(main, ["registry", "--section", "rewards"])
    assert "half" in res.output and "[dgx-extra (dgx_extra_mod:TABLE)]" in res.output


def test_registry_defaults_apply_to_every_kind_unless_the_config_sets_the_key(tmp_path):
    """A sampler step, a noise schedule, a credit wrapper and an evaluation get their entry's ``defaults`` as
    keywords (the config's explicit keys win), and a default the implementation does not take fails validation."""
    import functools

    from dgx.grpo.build import build_credit, build_schedule, build_step, needs_calibration
    from dgx.grpo.runner import evaluate

    (tmp_path / "my_eval.py").write_text(
        "def ev(model, protocol, *, depth: int = 1, width: int = 1):\n"
        "    return {'steps': protocol.steps, 'depth': depth, 'width': width}\n"
    )
    (tmp_path / "psi.json").write_text(json.dumps({"psi": [0.5] * 10}))
    write(
        tmp_path,
        f"""
    samplers:
      noisy_ode: {{impl: "dgx.sampler.steps:ode_step", defaults: {{sigma: 0.3}}}}
    noise:
      soft: {{impl: "dgx.sampler.schedules:UniformNoise", defaults: {{a: 0.25}}}}
      fixed_psi: {{impl: "dgx.sampler.schedules:TableNoise.from_json", defaults: {{psi_path: "{tmp_path / "psi.json"}"}}}}
    credit:
      coarse: {{impl: "dgx.rewards.credit:dense_gain", defaults: {{chunk: 3, ode_steps: 1}}}}
    evaluations:
      short: {{impl: "my_eval:ev", defaults: {{depth: 3, width: 5}}}}
    """,
        "reg.yaml",
    )
    body = "registry: reg.yaml\nsampler: {name: sde, noise: {name: soft}}\ncredit: {name: coarse, chunk: 7}\n"
    run = load(write(tmp_path, body + "eval: {name: short, steps: 9, depth: 4}\n")).variants["default"]
    reg = Registry([tmp_path / "reg.yaml"])
    step = build_step(
        load(write(tmp_path, "registry: reg.yaml\nsampler: {name: noisy_ode}\n")).variants["default"], reg
    )
    assert isinstance(step, functools.partial) and step.keywords == {"sigma": 0.3}
    assert build_schedule(run, reg).a == 0.25
    assert build_credit(run, reg).keywords == {"ode_steps": 1, "chunk": 7}  # chunk set: 7 wins
    parts = SimpleNamespace(model=None, cfg=run, registry=reg, scorers=None)
    assert evaluate(parts, tmp_path / "out") == {"steps": 9, "depth": 4, "width": 5}  # eval.depth set: 4 wins
    table = run.model_copy(deep=True)
    table.sampler.noise.name = "fixed_psi"
    assert not needs_calibration(table, reg) and build_schedule(table, reg).psi == (0.5,) * 10
    (tmp_path / "reg.yaml").write_text(
        (tmp_path / "reg.yaml").read_text().replace("defaults: {a: 0.25}", "defaults: {a: 0.25, alpha: 2}")
    )
    with pytest.raises(ConfigError, match=r"'soft' \(.*reg.yaml registry\): defaults alpha are not arguments of"):
        load(write(tmp_path, body))

"""Export + push: diffusers LoRA round trip, recorded Hub calls, no token leaks, clean failures."""

import hashlib
from pathlib import Path

import pytest
import torch
import yaml
from dgx.eval.benchmarks import generate
from dgx.grpo.assembly import assemble
from dgx.grpo.config import ModelConfig
from dgx.grpo.hub import export_run, push_run
from dgx.grpo.registry import Registry
from dgx.grpo.trainer import train
from dgx_test_helpers import tiny_config

TOKEN = "hf_dgxTestSecretToken0123456789"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_pipe_dir):
    tmp = tmp_path_factory.mktemp("hubrun")
    cfg = tiny_config(tmp, tiny_pipe_dir, iterations=2, lr=5e-2)
    run = tmp / "run"
    model = train(assemble(cfg, Registry([tmp / "reg.yaml"])), run)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return run, model, cfg


def snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_export_round_trip_with_diffusers_load_lora_weights(trained_run, tiny_pipe_dir, tmp_path):
    from dgx.sampler import SD3Model
    from diffusers import StableDiffusion3Pipeline

    run, model, cfg = trained_run
    files = {p.name for p in export_run(run, tmp_path / "export", "me/tiny")}
    assert {"pytorch_lora_weights.safetensors", "README.md", "config.yaml", "samples.png", "metrics.jsonl"} <= files
    card = (tmp_path / "export" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: diffusers" in card and "dense_gain" in card
    assert "The base model (top row) and this LoRA (bottom row)" in card
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipe_dir, text_encoder_3=None, tokenizer_3=None)
    base_imgs = generate(SD3Model(pipe), ["a red circle", "two blue squares"], 4, 2.0, seed=3)
    pipe.load_lora_weights(tmp_path / "export")
    fresh = SD3Model(pipe)
    prompts = ["a red circle", "two blue squares"]
    want = generate(model, prompts, 4, 2.0, seed=3)
    got = generate(fresh, prompts, 4, 2.0, seed=3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (got - base_imgs).abs().max() > 1e-3  # the adapter changes the images


def test_flux_export_loads_into_flux_pipeline(tmp_path, tiny_flux_dir):
    """A FLUX run exports through FluxPipeline's LoRA format; the card loads it with FluxPipeline."""
    from dgx.sampler.flux import FluxModel
    from diffusers import FluxPipeline

    cfg = tiny_config(tmp_path, tiny_flux_dir, iterations=1, lr=5e-2, updates_per_epoch=1)
    cfg.model = ModelConfig(name="flux", path=str(tiny_flux_dir), resolution=16, max_sequence_length=16)
    cfg.sampler.guidance, cfg.eval.steps = 3.5, 3
    run = tmp_path / "run"
    model = train(assemble(cfg, Registry([tmp_path / "reg.yaml"])), run)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    export_run(run, tmp_path / "export", "me/tiny-flux")
    card = (tmp_path / "export" / "README.md").read_text()
    assert f'FluxPipeline.from_pretrained("{tiny_flux_dir}")' in card and "- flux" in card
    pipe = FluxPipeline.from_pretrained(tiny_flux_dir)
    base_imgs = generate(FluxModel(pipe, 16, resolution=16), ["a red circle"], 3, 3.5, seed=3)
    pipe.load_lora_weights(tmp_path / "export")
    got = generate(FluxModel(pipe, 16, resolution=16), ["a red circle"], 3, 3.5, seed=3)
    torch.testing.assert_close(got, generate(model, ["a red circle"], 3, 3.5, seed=3), atol=1e-5, rtol=1e-4)
    assert (got - base_imgs).abs().max() > 1e-3


class RecordingApi:
    """Stands in for HfApi: records each call and the uploaded folder's contents."""

    def __init__(self, fail_status=None):
        self.calls, self.uploaded, self.fail_status = [], {}, fail_status

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))
        if self.fail_status:
            from huggingface_hub.errors import HfHubHTTPError
            from requests import Response

            r = Response()
            r.status_code = self.fail_status
            raise HfHubHTTPError("denied", response=r)

    def create_branch(self, repo_id, **kw):
        self.calls.append(("create_branch", repo_id, kw))

    def upload_folder(self, folder_path, repo_id, **kw):
        self.calls.append(("upload_folder", repo_id, kw))
        self.uploaded = {
            str(p.relative_to(folder_path)): p.read_bytes() for p in Path(folder_path).rglob("*") if p.is_file()
        }
        return type("Info", (), {"commit_url": f"https://hub.local/{repo_id}/commit/1"})()


def test_push_records_calls_and_never_leaks_token(trained_run, monkeypatch, capsys):
    run, _, _ = trained_run
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    before = snapshot(run)
    api = RecordingApi()
    lines = list(push_run(run, "me/dgx-tiny", private=True, revision="v1", api=api))
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][2] == {"private": True, "exist_ok": True, "repo_type": "model"}
    assert api.calls[2][2]["revision"] == "v1" and "pytorch_lora_weights.safetensors" in api.uploaded
    assert lines[-1].startswith("pushed") and "me/dgx-tiny" in lines[-1]
    assert snapshot(run) == before  # the run folder is unchanged
    out = capsys.readouterr()
    blobs = [out.out, out.err, *lines] + [p.read_bytes().decode("latin-1") for p in run.rglob("*") if p.is_file()]
    blobs += [v.decode("latin-1") for v in api.uploaded.values()]
    assert not any(TOKEN in b for b in blobs)


def test_dry_run_lists_and_uploads_nothing(trained_run):
    run, _, _ = trained_run
    api = RecordingApi()
    lines = list(push_run(run, "me/dgx-tiny", dry_run=True, api=api))
    assert api.calls == [] and any("would upload pytorch_lora_weights.safetensors" in x for x in lines)


@pytest.mark.parametrize("status,msg", [(401, "token is missing or invalid"), (403, "no write access")])
def test_push_failures_are_clear_and_leave_run_unchanged(trained_run, status, msg):
    run, _, _ = trained_run
    before = snapshot(run)
    with pytest.raises(RuntimeError, match=msg):
        list(push_run(run, "me/dgx-tiny", api=RecordingApi(fail_status=status)))
    assert snapshot(run) == before


def test_push_offline_mode(trained_run):
    run, _, _ = trained_run
    with pytest.raises(RuntimeError, match="offline mode"):
        list(push_run(run, "me/dgx-tiny"))  # the real HfApi; HF_HUB_OFFLINE=1 in tests


def test_push_rejects_non_run_folder(tmp_path):
    from dgx.grpo.errors import ConfigError

    with pytest.raises(ConfigError, match="not a dgx run folder"):
        list(push_run(tmp_path, "me/x", dry_run=True))


def test_a_pushed_run_uses_the_registry_files_it_was_trained_with(tmp_path):
    import json

    from dgx.grpo.errors import ConfigError
    from dgx.grpo.hub import run_registry

    (tmp_path / "reg.yaml").write_text("models:\n  mine: {impl: 'dgx.sampler.model:SD3Model.from_pretrained'}\n")
    run = tmp_path / "run"
    run.mkdir()
    assert "mine" not in run_registry(run).sections["models"]  # a run written without registry.json: built-ins only
    (run / "registry.json").write_text(json.dumps({"files": [str(tmp_path / "reg.yaml")]}))
    assert run_registry(run).get("models", "mine").source == str(tmp_path / "reg.yaml")
    (tmp_path / "reg.yaml").unlink()  # a file since removed is left out, and the name is then unknown
    with pytest.raises(ConfigError, match="unknown model 'mine'"):
        run_registry(run).get("models", "mine")


def test_checkpoint_takes_a_name_not_a_path(trained_run):
    from dgx.grpo.errors import ConfigError

    run, _, _ = trained_run
    for name in ("../../../other/seed_0/checkpoints/iter_00005", "/abs/iter_00001", "iter_1"):
        with pytest.raises(ConfigError, match="give a kept checkpoint's name \\(iter_NNNNN or best\\), not a path"):
            list(push_run(run, "me/dgx-tiny", dry_run=True, checkpoint=name))


def test_the_card_describes_the_checkpoint_exported(trained_run, tmp_path):
    run, _, _ = trained_run
    export_run(run, tmp_path / "last")
    card = (tmp_path / "last" / "README.md").read_text()
    assert "| iterations x prompts x group | 2 x" in card and "`iter_00001`" in card
    export_run(run, tmp_path / "kept", checkpoint="iter_00000")
    card = (tmp_path / "kept" / "README.md").read_text()
    assert "| iterations x prompts x group | 1 (of 2) x" in card and "`iter_00000`" in card
    assert not (tmp_path / "kept" / "eval_summary.json").exists()  # the run's final evaluation is not this one's


def test_a_dead_hub_endpoint_fails_in_one_line_before_any_export(trained_run):
    import os
    import subprocess
    import sys
    import time

    run, _, _ = trained_run
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN}
    env["PYTHONPATH"] = f"{Path(__file__).parent}{os.pathsep}{env.get('PYTHONPATH', '')}"
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "dgx.grpo.cli", "push", str(run), "--repo-id", "me/dgx-tiny"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert len(errors) == 1 and "cannot reach the Hub to push me/dgx-tiny" in errors[0], res.stderr[-2000:]
    assert "exported" not in res.stdout + res.stderr and "Loading pipeline" not in res.stderr  # no export work
    assert TOKEN not in res.stdout + res.stderr
    print(f"dead endpoint refused in {time.perf_counter() - t0:.1f} s")

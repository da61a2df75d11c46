"""Every registry entry keeps its kind's contract (dgx.grpo.contracts), built on its offline stand-in: a new entry
with a stand-in is covered here with no test edit. Then what a contract cannot say about one entry."""

import pytest
import torch
from dgx.grpo import contracts
from dgx.grpo.registry import Registry

REG = Registry()
ENTRIES = [(section, name) for section in contracts.KINDS for name in REG.names(section)]


@pytest.mark.parametrize("section,name", ENTRIES, ids=[f"{s}.{n}" for s, n in ENTRIES])
def test_every_registry_entry_keeps_its_kinds_contract(section, name, tmp_path):
    try:
        contracts.check_entry(REG, section, name, tmp_path)
    except contracts.Unavailable as why:
        pytest.skip(str(why))


def test_the_contracts_catch_what_they_promise():
    """Each check refuses a component that breaks it."""
    from dgx.rewards.ink import Ink
    from dgx.sampler import UniformNoise, sde_step

    class Batchy(Ink):  # scores depend on the batch: a split batch scores differently
        def __call__(self, images, prompts, metadata=None):
            return super().__call__(images, prompts) + len(images)

    with pytest.raises(contracts.ContractError, match="split batches"):
        contracts.check_reward(Batchy())
    with pytest.raises(contracts.ContractError, match="shape"):
        contracts.check_reward(lambda images, prompts, metadata: torch.zeros(len(images), 2))
    with pytest.raises(contracts.ContractError, match=">= 0"):
        contracts.check_noise(UniformNoise(-1.0))

    def leaky(x, v, t, t_next, sigma, generator=None, x_next=None):  # scores its own sample with the wrong mean
        out = sde_step(x, v, t, t_next, sigma, generator=generator, x_next=x_next)
        return sde_step(x, v + 1, t, t_next, sigma, x_next=out.sample) if x_next is not None else out

    with pytest.raises(contracts.ContractError, match="log-density"):
        contracts.check_sampler(leaky)


def test_the_new_kinds_contracts_catch_what_they_promise(tmp_path):
    """An objective that climbs the wrong way, a model whose LoRA target matches no layer, an evaluation whose images
    change between calls and a prompt source with an empty split are each refused."""
    import dataclasses

    from dgx.grpo.loss import FlowGRPO
    from dgx.sampler import SD3Model

    class Ascent(FlowGRPO):  # the loss's sign flipped: descent lowers the log-prob of good steps
        def __call__(self, *a):
            out = super().__call__(*a)
            return dataclasses.replace(out, loss=-out.loss)

    with pytest.raises(contracts.ContractError, match="descent raises"):
        contracts.check_objective(Ascent())
    shapes = SD3Model.from_pretrained(str(contracts.resources.files("dgx.rewards.shapes").joinpath("weights")))
    shapes.lora_targets = ("attn.no_such_layer",)
    with pytest.raises(contracts.ContractError, match="matches no layer"):
        contracts.check_model(shapes)
    calls = []

    def drifting(out):  # a different score on each call
        out.mkdir(parents=True)
        (out / "per_image.jsonl").write_text(f'{{"index": 0, "x": {len(calls)}}}\n')
        calls.append(1)
        return {"x": float(len(calls))}

    with pytest.raises(contracts.ContractError, match="do not pair"):
        contracts.check_evaluation(drifting)
    with pytest.raises(contracts.ContractError, match="test: a non-empty list"):
        contracts.check_prompts(lambda split: [{"prompt": "a cat"}] if split == "train" else [])


def test_clipscore_is_w_times_the_positive_cosine_of_clips_embeddings(tmp_path):
    """CLIPScore on a tiny random-weight CLIP: w * max(cos, 0) of the model's own embeddings (Hessel et al.)."""
    from dgx.rewards.clipscore import CLIPScore
    from dgx.rewards.standins import clip_reward
    from transformers import CLIPModel, CLIPProcessor

    args = clip_reward(tmp_path)["args"]
    reward = CLIPScore(**args, w=2.5, preprocess="processor")
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = ["a photo of a cat", "two red dogs", "a sign that says hello", "a blue car"]
    model, processor = CLIPModel.from_pretrained(args["path"]).eval(), CLIPProcessor.from_pretrained(args["path"])
    inputs = processor(
        text=prompts,
        images=list((images * 255).round().byte().permute(0, 2, 3, 1).numpy()),
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        out = model(**inputs)
    cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
    assert reward(images, prompts).tolist() == pytest.approx((2.5 * cos.clamp_min(0)).tolist(), abs=1e-5)
    assert (cos < 0).any() and (reward(images, prompts) == 0).any()  # the negative ones are clipped to 0


def test_dgx_registry_check_reports_each_entry(tmp_path):
    """`dgx registry --check` prints each entry's verdict; a user's broken entry fails the command in one line."""
    from click.testing import CliRunner
    from dgx.grpo.cli import main

    ok = CliRunner().invoke(main, ["registry", "--check", "--section", "noise"])
    assert ok.exit_code == 0, ok.output
    assert "uniform          ok" in ok.output and "calibrated       ok" in ok.output
    (tmp_path / "negative.py").write_text(
        "from dgx.sampler import ConstantNoise\n\ndef minus():\n    return ConstantNoise(-1.0)\n"
    )
    (tmp_path / "reg.yaml").write_text("noise:\n  minus: {impl: 'negative:minus', description: broken}\n")
    bad = CliRunner().invoke(main, ["registry", "--check", "--section", "noise", "--file", str(tmp_path / "reg.yaml")])
    assert bad.exit_code == 2 and "minus            FAILED: ContractError:" in bad.output
    assert "1 component(s) break their kind's contract" in bad.output

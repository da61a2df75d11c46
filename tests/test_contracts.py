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

"""dgx's HPSv2 against the reference package's own scoring function, `hpsv2.img_score.score` (hpsv2x 1.2.0, with its
vendored open_clip), on a tiny random-weight open_clip model of the same classes; and the paper-size architecture's
parameter count, open_clip's ViT-H-14 against dgx's transformers CLIP, on the meta device.

The reference needs torchvision, which does not load beside this machine's CPU torch build, so this runs in a scratch
environment (see README.md); dgx's packages come from PYTHONPATH.

    python research/experiments/hps_reference/check.py OUT_DIR
"""

import gzip
import json
import sys
from pathlib import Path

import hpsv2.img_score as reference
import numpy as np
import torch
from hpsv2.src.open_clip import add_model_config, create_model, create_model_and_transforms
from hpsv2.src.open_clip import tokenizer as oc_tokenizer
from PIL import Image

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
TINY = {  # open_clip's model-config format; ViT-H-14's own shape, small
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
(out / "HPS-tiny.json").write_text(json.dumps(TINY))
add_model_config(out / "HPS-tiny.json")
torch.manual_seed(0)
model, _, preprocess_val = create_model_and_transforms(
    "HPS-tiny", None, precision="fp32", device="cpu", output_dict=True
)
with torch.no_grad():  # open_clip starts layer norms at 1 and 0: perturb everything so that no mapping error hides
    for p in model.parameters():
        p.add_(0.02 * torch.randn_like(p))
torch.save({"state_dict": model.state_dict()}, out / "tiny.pt")

# the same architecture in transformers' format: config, open_clip's BPE tokenizer and its preprocessing
from transformers import CLIPConfig, CLIPImageProcessor, CLIPProcessor, CLIPTokenizer  # noqa: E402

bpe = gzip.open(Path(oc_tokenizer.__file__).parent / "bpe_simple_vocab_16e6.txt.gz").read().decode().split("\n")
merges = [tuple(m.split()) for m in bpe[1 : 49152 - 256 - 2 + 1]]
vocab = list(oc_tokenizer.bytes_to_unicode().values())
vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
hf = out / "hf"
hf.mkdir(exist_ok=True)
(hf / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
(hf / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
tok = CLIPTokenizer(str(hf / "vocab.json"), str(hf / "merges.txt"), pad_token="!")
size = TINY["vision_cfg"]["image_size"]
images_proc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
CLIPProcessor(images_proc, tok).save_pretrained(hf)
v, t = TINY["vision_cfg"], TINY["text_cfg"]
CLIPConfig(
    text_config=dict(
        hidden_size=t["width"],
        intermediate_size=4 * t["width"],
        num_hidden_layers=t["layers"],
        num_attention_heads=t["heads"],
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_act="gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0,
    ),
    vision_config=dict(
        hidden_size=v["width"],
        intermediate_size=4 * v["width"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["width"] // v["head_width"],
        patch_size=v["patch_size"],
        image_size=size,
        hidden_act="gelu",
    ),
    projection_dim=TINY["embed_dim"],
).save_pretrained(hf)

from dgx.rewards.hps import HPSv2  # noqa: E402

rng = np.random.RandomState(0)
pixels = [rng.randint(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(6)]
prompts = [
    "a photo of a cat",
    "two red dogs on a beach",
    "a sign that says hello",
    "an astronaut riding a horse",
    "a bowl of fruit",
    "a blue car",
]
reference.model_dict.update(model=model, preprocess_val=preprocess_val)  # the tiny model in place of ViT-H-14
want = [
    float(reference.score([Image.fromarray(p)], prompt, cp=str(out / "tiny.pt"))[0])
    for p, prompt in zip(pixels, prompts)
]
images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255
result = {"reference": want}
for mode in ("open_clip", "tensor", "processor"):
    got = HPSv2(str(out / "tiny.pt"), processor_path=str(hf), preprocess=mode)(images, prompts).tolist()
    result[mode] = got
    result[f"{mode}_max_abs_difference"] = max(abs(a - b) for a, b in zip(got, want))

with torch.device("meta"):
    paper = create_model("ViT-H-14", None, precision="fp32", device="meta")
from dgx.rewards.architectures import CLIP_VIT_H_14, clip_model  # noqa: E402

with torch.device("meta"):
    ours = clip_model(CLIP_VIT_H_14, 224)
result["parameters"] = {
    "open_clip ViT-H-14": sum(p.numel() for p in paper.parameters()),
    "dgx CLIP (transformers)": sum(p.numel() for p in ours.parameters()),
}
print(json.dumps(result, indent=2))
(out / "result.json").write_text(json.dumps(result, indent=2))

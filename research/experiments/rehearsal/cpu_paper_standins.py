"""Writes the paper-scale stand-ins on the CPU and loads each through dgx's real loaders (no GPU needed for this part):
SD3Model.from_pretrained (bf16; the pipeline's five models), PickScore scoring one 512 px image, and GenEval's
Mask2Former + CLIP colours on the same image. Prints one JSON line per step (seconds, sizes).

    python research/experiments/rehearsal/cpu_paper_standins.py FOLDER
"""

import json
import sys
import time
from pathlib import Path

import torch
from dgx.grpo.rehearse import PICKSCORE_PROMPTS, prompt_vocabulary, write_prompts, write_standins
from dgx.rewards.architectures import parameters

folder = Path(sys.argv[1])


def log(step: str, t0: float, **kw) -> None:
    print(json.dumps({"step": step, "seconds": round(time.perf_counter() - t0, 1), **kw}), flush=True)


t0 = time.perf_counter()
prompts = write_prompts(folder / "prompts")
paths = write_standins(folder / "standins", "paper", prompt_vocabulary(), "cpu")
size = {k: round(sum(f.stat().st_size for f in v.rglob("*") if f.is_file()) / 2**30, 2) for k, v in paths.items()}
log("write_standins", t0, gib=size)

from dgx.sampler import SD3Model  # noqa: E402

t0 = time.perf_counter()
model = SD3Model.from_pretrained(str(paths["sd35m"]), dtype=torch.bfloat16, max_sequence_length=128, resolution=512)
pipe = model.pipe
counts = {
    k: parameters(getattr(pipe, k)) for k in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
}
log("SD3Model.from_pretrained", t0, parameters=counts, grid=[round(x, 4) for x in model.grid(10).tolist()])
del model, pipe

image = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
from dgx.rewards.pickscore import PickScore  # noqa: E402

t0 = time.perf_counter()
score = PickScore(str(paths["pickscore"]), str(paths["pickscore"]))(image, [PICKSCORE_PROMPTS[0]])
log("PickScore (CLIP-H) one 512 px image", t0, score=score.tolist())

from dgx.rewards.geneval_hf import hf_geneval  # noqa: E402

meta = [json.loads(ln) for ln in prompts["geneval_train"].read_text().splitlines()][:1]
t0 = time.perf_counter()
reward = hf_geneval(partial=True, path=str(paths["mask2former"]), processor_path=str(paths["clip_l"]))
r = reward(image, [meta[0]["prompt"]], meta)
detections = reward.detector((image[0].permute(1, 2, 0) * 255).round().byte().numpy())
log("GenEval (Mask2Former Swin-S + CLIP-L) one 512 px image", t0, reward=r.tolist(), detections=len(detections))

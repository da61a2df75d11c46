"""HPSv2.1 (Wu et al., 2023): the cosine similarity of an image and its prompt under open_clip's ViT-H/14 fine-tuned on
human preferences (docs/method.md, section 2).

HPS's checkpoint is an open_clip state dict. dgx loads it into transformers' ``CLIPModel`` of the same architecture
(laion's CLIP-ViT-H-14, whose config and processor are on the Hub in transformers' format) by renaming its tensors
(``open_clip_to_clip``), so that HPS scores through the same code, on the same device, as PickScore: no open_clip, no
torchvision (whose wheels do not load beside every torch build), and no ``hpsv2`` package (which pins protobuf < 4
and downloads at import).
"""

from __future__ import annotations

from pathlib import Path

import torch
from dgx.rewards.base import load_error
from dgx.rewards.pickscore import PickScore


def _layer_pairs(prefix_oc: str, prefix_hf: str, layers: int) -> list[tuple[str, str]]:
    pairs = []
    for i in range(layers):
        oc, hf = f"{prefix_oc}.resblocks.{i}", f"{prefix_hf}.encoder.layers.{i}"
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj")):
            pairs += [(f"{oc}.{a}.weight", f"{hf}.{b}.weight"), (f"{oc}.{a}.bias", f"{hf}.{b}.bias")]
        for a, b in (("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            pairs += [(f"{oc}.{a}.weight", f"{hf}.{b}.weight"), (f"{oc}.{a}.bias", f"{hf}.{b}.bias")]
    return pairs


def _renames(text_layers: int, vision_layers: int) -> list[tuple[str, str]]:
    """(open_clip name, transformers name) of every tensor but the fused attention inputs and the projections."""
    pairs = [
        ("logit_scale", "logit_scale"),
        ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
        ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
        ("ln_final.weight", "text_model.final_layer_norm.weight"),
        ("ln_final.bias", "text_model.final_layer_norm.bias"),
        ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
        ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
        ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
        ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),
        ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
        ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
        ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
    ]
    return (
        pairs
        + _layer_pairs("transformer", "text_model", text_layers)
        + _layer_pairs("visual.transformer", "vision_model", vision_layers)
    )


def _fused(text_layers: int, vision_layers: int) -> list[tuple[str, str]]:
    """(open_clip resblock, transformers attention) of every layer: open_clip fuses q, k and v in ``in_proj``."""
    return [
        (f"transformer.resblocks.{i}.attn", f"text_model.encoder.layers.{i}.self_attn") for i in range(text_layers)
    ] + [
        (f"visual.transformer.resblocks.{i}.attn", f"vision_model.encoder.layers.{i}.self_attn")
        for i in range(vision_layers)
    ]


PROJECTIONS = (("text_projection", "text_projection.weight"), ("visual.proj", "visual_projection.weight"))


def open_clip_to_clip(state: dict[str, torch.Tensor], text_layers: int, vision_layers: int) -> dict[str, torch.Tensor]:
    """An open_clip CLIP state dict (OpenAI's layout, as HPS saves it) as transformers ``CLIPModel`` tensors. A tensor
    left over or missing is a ValueError naming it."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out = {hf: state.pop(oc) for oc, hf in _renames(text_layers, vision_layers)}
    for oc, hf in _fused(text_layers, vision_layers):
        for part, w in zip("qkv", state.pop(f"{oc}.in_proj_weight").chunk(3)):
            out[f"{hf}.{part}_proj.weight"] = w
        for part, b in zip("qkv", state.pop(f"{oc}.in_proj_bias").chunk(3)):
            out[f"{hf}.{part}_proj.bias"] = b
    for oc, hf in PROJECTIONS:  # open_clip multiplies x @ P; a Linear's weight is P transposed
        out[hf] = state.pop(oc).t().contiguous()
    state.pop("attn_mask", None)  # open_clip's causal mask buffer, rebuilt by transformers
    if state:
        raise ValueError(f"open_clip tensors with no CLIP counterpart: {sorted(state)[:5]}")
    return out


def clip_to_open_clip(state: dict[str, torch.Tensor], text_layers: int, vision_layers: int) -> dict[str, torch.Tensor]:
    """The inverse of ``open_clip_to_clip``: a ``CLIPModel``'s tensors in open_clip's layout (stand-ins write HPS-style
    checkpoints with it)."""
    out = {oc: state[hf] for oc, hf in _renames(text_layers, vision_layers)}
    for oc, hf in _fused(text_layers, vision_layers):
        out[f"{oc}.in_proj_weight"] = torch.cat([state[f"{hf}.{p}_proj.weight"] for p in "qkv"])
        out[f"{oc}.in_proj_bias"] = torch.cat([state[f"{hf}.{p}_proj.bias"] for p in "qkv"])
    for oc, hf in PROJECTIONS:
        out[oc] = state[hf].t().contiguous()
    return out


class HPSv2(PickScore):
    """HPSv2.1: ``cos(image, text)`` of open_clip's ViT-H/14 with HPS's weights (``hps = image_features @
    text_features.T``, the features L2-normalised, as ``hpsv2.score``).

    ``path``: a local checkpoint file, or the Hub repository holding ``checkpoint`` (HPS v2.1's by default; v2.0's is
    ``HPS_v2_compressed.pt``). ``processor_path``: the transformers CLIP config and processor of the architecture
    (laion's ViT-H/14, whose tokenizer is open_clip's). ``preprocess``: ``open_clip`` (the default), the reference's
    own transform on the reward's device; ``tensor`` or ``processor``, PickScore's.
    """

    name = "hps"

    def __init__(
        self,
        path: str = "xswu/HPSv2",
        checkpoint: str = "HPS_v2.1_compressed.pt",
        processor_path: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        preprocess: str = "open_clip",
    ):
        super().__init__(path, processor_path, device, batch_size, 1.0, preprocess)
        self.checkpoint = checkpoint

    def _load(self) -> None:
        from transformers import AutoProcessor, CLIPConfig, CLIPModel

        try:
            self.processor = AutoProcessor.from_pretrained(self.processor_path)
            config = CLIPConfig.from_pretrained(self.processor_path)
        except (OSError, ValueError) as e:
            raise load_error(self.processor_path, "the CLIP processor and config of HPS", e) from e
        try:
            file = self.path if Path(self.path).is_file() else _download(self.path, self.checkpoint)
            state = torch.load(file, map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise load_error(self.path, f"the HPS checkpoint {self.checkpoint}", e) from e
        layers = (config.text_config.num_hidden_layers, config.vision_config.num_hidden_layers)
        model = CLIPModel(config)
        missing, _ = model.load_state_dict(open_clip_to_clip(state.get("state_dict", state), *layers), strict=False)
        if [k for k in missing if not k.endswith("position_ids")]:
            raise ValueError(f"{self.path}: the HPS checkpoint lacks {missing[:5]}")
        self.model = model.eval().to(self.device)

    def score(self, cos: torch.Tensor) -> torch.Tensor:
        return cos


def _download(repo: str, filename: str) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo, filename)

"""Third-party import quirks. Importing this module handles them, once per process: the modules that import diffusers'
pipeline classes (model, flux, tiny, architectures) import it right before, so nothing is paid at start-up."""

from __future__ import annotations

import importlib.util
import sys

PIL_FALLBACKS = ("CLIPImageProcessor", "SiglipImageProcessor")  # the processors diffusers' pipelines import by name


def pil_image_processors() -> None:
    """Without torchvision, transformers >= 5 resolves ``CLIPImageProcessor`` to ``CLIPImageProcessorPil`` on first use
    and warns that it did; diffusers' SD3 and FLUX pipelines import CLIP's and SigLIP's processors by name, so every
    command would warn. Where torchvision is missing, bind those names to the PIL classes up front (the class
    transformers would pick) so nothing warns; with torchvision, or with a transformers that has no PIL classes,
    nothing changes."""
    if importlib.util.find_spec("torchvision") is not None or importlib.util.find_spec("transformers") is None:
        return
    import transformers

    pils = {name: getattr(transformers, f"{name}Pil", None) for name in PIL_FALLBACKS}
    module = sys.modules["transformers"]  # after the lookups: transformers' first import may swap its module object
    for name, pil in pils.items():
        if pil is not None:
            setattr(module, name, pil)


pil_image_processors()

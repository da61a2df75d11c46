"""The component registry: names in configs -> implementations ("module:attr")."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from dgx.grpo.errors import ConfigError

SECTIONS = ("models", "samplers", "noise", "rewards", "credit", "objectives", "evaluations")


@dataclass
class Entry:
    name: str
    impl: str
    description: str
    defaults: dict = field(default_factory=dict)
    source: str = "builtin"

    def load(self) -> Any:
        """Import the implementation (``module:attr[.attr]``); a user registry file's module may also
        be a ``module.py`` beside that file."""
        mod, _, attr = self.impl.partition(":")
        local = Path(self.source).parent / (mod.replace(".", "/") + ".py")
        if self.source != "builtin" and local.is_file():
            spec = importlib.util.spec_from_file_location(mod, local)
            obj = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(obj)
        else:
            obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


class Registry:
    """Built-in registry plus user files (``DGX_REGISTRY`` paths, or ``registry:`` in a config)."""

    def __init__(self, extra: list[str | Path] = ()):
        self.sections: dict[str, dict[str, Entry]] = {s: {} for s in SECTIONS}
        self._add(yaml.safe_load(resources.files("dgx.grpo").joinpath("registry.yaml").read_text()), "builtin")
        env = [p for p in os.environ.get("DGX_REGISTRY", "").split(os.pathsep) if p]
        for path in [*env, *extra]:
            self.add_file(path)

    def add_file(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: registry file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
        self._add(data, str(path))

    def _add(self, data: dict, source: str) -> None:
        for section, entries in data.items():
            if section not in self.sections:
                raise ConfigError(f"{source}: unknown registry section {section!r}; valid: {', '.join(SECTIONS)}")
            for name, e in (entries or {}).items():
                if not isinstance(e, dict) or "impl" not in e:
                    raise ConfigError(f"{source}: {section}.{name}: needs an 'impl: module:attr' entry")
                self.sections[section][name] = Entry(
                    name, e["impl"], e.get("description", ""), e.get("defaults", {}), source
                )

    def get(self, section: str, name: str, where: str = "") -> Entry:
        entries = self.sections[section]
        if name not in entries:
            raise ConfigError(
                f"{where}unknown {section[:-1] if section.endswith('s') else section} {name!r}{suggest(name, entries)}"
            )
        return entries[name]

    def names(self, section: str) -> list[str]:
        return sorted(self.sections[section])


def suggest(name: str, valid) -> str:
    """'; did you mean ...? valid: ...' for an unknown name."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} (valid: {', '.join(valid)})"

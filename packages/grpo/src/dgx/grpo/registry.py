"""The component registry: names in configs -> implementations ("module:attr").

Each installed package adds its components through the ``dgx.registry`` entry point: dgx-sampler its models,
samplers and noise schedules, dgx-rewards its rewards and credit, dgx-eval its evaluations, dgx-grpo its objectives,
each from the ``registry.yaml`` beside its code. A third-party package does the same in its pyproject.toml::

    [project.entry-points."dgx.registry"]
    mypkg = "mypkg"                  # mypkg/registry.yaml
    other = "mypkg.components:TABLE" # or a dict (or a function returning one) of the same shape

User files (``DGX_REGISTRY`` paths, ``registry:`` in a config, ``dgx registry --file``) come last and override.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from dgx.grpo.errors import ConfigError

SECTIONS = ("models", "samplers", "noise", "rewards", "credit", "objectives", "evaluations", "prompts")


@dataclass
class Entry:
    name: str
    impl: str
    description: str
    defaults: dict = field(default_factory=dict)
    source: str = "builtin"
    stand_in: str | None = None  # module:attr building an offline stand-in (dgx.grpo.contracts)

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


ENTRY_POINTS = "dgx.registry"


def installed_components() -> list[tuple[str, dict, str]]:
    """(source, components, distribution) of every installed package's ``dgx.registry`` entry point, dgx's own first: a module
    means its ``registry.yaml``, a ``module:attr`` a dict or a function returning one."""
    from importlib.metadata import entry_points

    out = []
    for ep in sorted(entry_points(group=ENTRY_POINTS), key=lambda e: (not e.value.startswith("dgx."), e.name)):
        try:
            if ep.attr:
                obj = ep.load()
                data = obj() if callable(obj) else obj
            else:
                data = yaml.safe_load(package_file(ep.module, "registry.yaml").read_text())
        except Exception as e:  # noqa: BLE001  (a third-party package's failure, named)
            raise ConfigError(
                f"entry point {ENTRY_POINTS}:{ep.name} ({ep.value}): cannot load ({type(e).__name__}: {e})"
            ) from None
        dist = ep.dist.name if ep.dist is not None else ep.name
        out.append(("builtin" if ep.value.startswith("dgx.") else f"{dist} ({ep.value})", data or {}, dist))
    return out


def package_file(module: str, name: str):
    """The file ``name`` beside package ``module``'s code, found without running the package (dgx.sampler's import
    alone takes seconds: torch), or through importlib.resources where it is not on disk."""
    spec = importlib.util.find_spec(module)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return resources.files(module).joinpath(name)


class Registry:
    """Every installed package's components (``dgx.registry`` entry points), then user files (``DGX_REGISTRY``
    paths, or ``registry:`` in a config); ``sources`` lists where they came from, in order."""

    def __init__(self, extra: list[str | Path] = (), config: str | Path | None = None):
        self.sections: dict[str, dict[str, Entry]] = {s: {} for s in SECTIONS}
        self.sources: list[str] = []
        self.config = config  # the config file whose `module:attr` names may be a module.py beside it
        for source, data, dist in installed_components():
            self._add(data, source)
            self.sources.append(f"{dist} (entry point)")
        env = [p for p in os.environ.get("DGX_REGISTRY", "").split(os.pathsep) if p]
        for path in [*env, *extra]:
            self.add_file(path)
            self.sources.append(str(Path(path).resolve()))

    def add_file(self, path: str | Path) -> None:
        from dgx.grpo import yamlfile

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: registry file not found")
        data = yamlfile.read(path, "a registry file") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a registry file is a mapping of sections, got {type(data).__name__}")
        self._add(data, str(path))

    def _add(self, data: dict, source: str) -> None:
        for section, entries in data.items():
            if section not in self.sections:
                raise ConfigError(f"{source}: unknown registry section {section!r}; valid: {', '.join(SECTIONS)}")
            if not isinstance(entries or {}, dict):
                raise ConfigError(f"{source}: {section}: a mapping of name -> entry, got {type(entries).__name__}")
            for name, e in (entries or {}).items():
                if not isinstance(e, dict) or not isinstance(e.get("impl"), str):
                    raise ConfigError(f"{source}: {section}.{name}: needs an 'impl: module:attr' entry")
                if not isinstance(e.get("defaults", {}), dict):
                    raise ConfigError(f"{source}: {section}.{name}.defaults: a mapping of argument -> value")
                self.sections[section][name] = Entry(
                    name, e["impl"], e.get("description", ""), e.get("defaults", {}), source, e.get("stand_in")
                )

    def get(self, section: str, name: str, where: str = "") -> Entry:
        """The entry named ``name``; a ``module:attr`` name is its own entry (no description or defaults)."""
        entries = self.sections[section]
        if ":" in name and name not in entries:
            return Entry(name, name, "", {}, str(self.config) if self.config else "builtin")
        if name not in entries:
            raise ConfigError(
                f"{where}unknown {section[:-1] if section.endswith('s') else section} {name!r}{suggest(name, entries)}"
            )
        return entries[name]

    def names(self, section: str) -> list[str]:
        return sorted(self.sections[section])


def accepted_arguments(factory) -> set[str] | None:
    """The keyword arguments ``factory`` (a class or a function) takes; None (any) when it takes ``**kwargs``."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def defaults_not_taken(entry: Entry, impl) -> tuple[list[str], set[str] | None]:
    """The keys of ``entry.defaults`` that ``impl`` takes no argument for (in the entry's order), and what it takes."""
    takes = accepted_arguments(impl)
    return [k for k in entry.defaults if takes is not None and k not in takes], takes


def suggest(name: str, valid) -> str:
    """'; did you mean ...? valid: ...' for an unknown name."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} (valid: {', '.join(valid)})"

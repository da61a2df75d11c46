"""Component nodes: a config's ``{name: ..., <keyword arguments>}``, checked against the implementation's signature.

The signature is the schema. A node's keys other than ``name`` (and the keys dgx itself reads on some kinds, such
as ``noise.window``) are the component's own keyword arguments: each must be a parameter of the
implementation, its value is converted to the parameter's annotation (pydantic), and a parameter without a default
must be given by the node or by the registry entry's ``defaults``. Arguments that dgx passes itself (``SUPPLIED``) are
not the config's to set.
"""

from __future__ import annotations

import inspect
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from dgx.grpo.registry import Entry, suggest
from pydantic import TypeAdapter, ValidationError

# per registry section: the arguments dgx passes itself, and whether only keyword-only parameters are the config's
# (a credit rule is called as fn(model, trajectory, reward, metadata, **its arguments))
SUPPLIED = {
    "rewards": ({"device", "rewards"}, False),
    "credit": (set(), True),
    "noise": (set(), False),
}


# per registry section: arguments the config may set, or leave to dgx (a psi table's path: the run's calibration)
FILLED = {"noise": {"psi_path"}}


class NodeError(ValueError):
    """A node argument the implementation does not accept: ``key`` and the reason."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def signature(impl) -> inspect.Signature:
    """The implementation's signature with its annotations evaluated where they can be."""
    try:
        return inspect.signature(impl, eval_str=True)
    except (NameError, TypeError, SyntaxError):  # an annotation that does not evaluate: check names only
        return inspect.signature(impl)


def parameters(impl, section: str) -> tuple[dict[str, inspect.Parameter], bool]:
    """The parameters a config node may set (name -> parameter), and whether the implementation takes ``**kwargs``."""
    supplied, keyword_only = SUPPLIED.get(section, (set(), False))
    params = signature(impl).parameters.values()
    kinds = (
        (inspect.Parameter.KEYWORD_ONLY,)
        if keyword_only
        else (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
    )
    own = {p.name: p for p in params if p.kind in kinds and p.name not in supplied and p.name != "self"}
    return own, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def check_arguments(args: dict[str, Any], entry: Entry, impl, section: str) -> dict[str, Any]:
    """``args`` (a node's own keys) converted to the annotated types of ``impl``'s parameters; a NodeError names the
    first key that is unknown, of the wrong type, or a required parameter the node and the entry's defaults leave
    out."""
    own, any_key = parameters(impl, section)
    kind = section[:-1] if section.endswith("s") else section
    out = {}
    for key, value in args.items():
        p = own.get(key)
        if p is None:
            if any_key:
                out[key] = value
                continue
            hint = suggest(key, own) if own else " (it takes no arguments)"
            raise NodeError(key, f"{kind} {entry.name!r} takes no {key!r}{hint}")
        if p.annotation is not inspect.Parameter.empty and not isinstance(p.annotation, str):
            try:
                value = TypeAdapter(p.annotation).validate_python(value)
            except ValidationError as e:
                why = e.errors()[0]["msg"]
                raise NodeError(key, f"{kind} {entry.name!r}: {why} (got {value!r})") from None
            except Exception:  # noqa: BLE001  (an annotation pydantic cannot check: the names were checked)
                pass
        out[key] = value
    for name, p in own.items():
        filled = name in out or name in entry.defaults or name in FILLED.get(section, ())
        if p.default is inspect.Parameter.empty and not filled:
            raise NodeError(name, f"{kind} {entry.name!r} needs {name!r}: give it in the config")
    return out


def describe(impl, section: str) -> list[str]:
    """The arguments a config node of ``impl`` may set, as ``name: type = default`` (for the docs and the CLI)."""
    own, any_key = parameters(impl, section)
    out = []
    for name, p in own.items():
        typ = "" if p.annotation is inspect.Parameter.empty else f": {type_text(p.annotation)}"
        default = "" if p.default is inspect.Parameter.empty else f" = {p.default!r}"
        out.append(f"{name}{typ}{default}")
    return out + ["**kwargs"] * any_key


def type_text(annotation) -> str:
    """An annotation as a reader writes it: ``float >= 0`` for ``Annotated[float, Ge(0)]``, no ``typing.``."""
    if get_origin(annotation) is Annotated:
        base, *marks = get_args(annotation)
        bounds = [f"{op} {getattr(m, key)}" for m in marks for key, op in BOUNDS.items() if hasattr(m, key)]
        return " ".join([type_text(base), *bounds])
    if get_origin(annotation) in (Union, UnionType):
        return " | ".join("None" if a is type(None) else type_text(a) for a in get_args(annotation))
    return inspect.formatannotation(annotation).replace("typing.", "")


BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}

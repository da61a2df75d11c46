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
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from dgx.grpo.errors import ConfigError
from dgx.grpo.registry import Entry, suggest
from dgx.rewards.base import Reward
from pydantic import TypeAdapter, ValidationError

# per registry section: the arguments dgx passes itself, and whether only keyword-only parameters are the config's
# (a credit rule is called as fn(model, trajectory, reward, metadata, **its arguments), an evaluation as
# fn(model, protocol, **its arguments), a prompt source as fn(split, **its arguments))
SUPPLIED = {
    "models": ({"dtype", "device", "transformer"}, False),
    "rewards": ({"device"}, False),
    "credit": (set(), True),
    "noise": (set(), False),
    "evaluations": ({"scorers"}, True),
    "prompts": (set(), True),
}

# parameter types that are components themselves: a parameter annotated with one (or a dict of them) takes a node
# of that kind (a registry name, or ``{name: ..., its own arguments}``), which dgx builds and passes in
COMPONENTS = {Reward: "rewards"}


# per registry section: arguments the config may set, or leave to dgx (a psi table's path: the run's calibration)
FILLED = {"noise": {"psi_path"}}
# sections whose reward-typed argument, left out, is the run's own reward (an evaluation scores what it trained on)
RUN_REWARD = {"evaluations"}


KIND_NAMES = {"prompts": "prompt source"}  # how errors name a component of a section


class NodeError(ValueError):
    """A node argument the implementation does not accept: ``key`` and the reason."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def signature(impl) -> inspect.Signature:
    """The implementation's signature with its annotations evaluated where they can be (a dataclass's fields each
    in the module that declares them, so a subclass elsewhere keeps its base's types)."""
    try:
        return inspect.signature(impl, eval_str=True)
    except (NameError, TypeError, SyntaxError):  # an annotation that does not evaluate here
        sig = inspect.signature(impl)
    if inspect.isclass(impl):
        try:
            hints = get_type_hints(impl, include_extras=True)
        except Exception:  # noqa: BLE001  (an annotation that does not evaluate anywhere: check names only)
            return sig
        return sig.replace(
            parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()]
        )
    return sig


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


def component(annotation) -> tuple[str, bool] | None:
    """(registry section, many) when ``annotation`` is a component type (``Reward``, ``Reward | None``: one node) or a
    mapping of them (``dict[str, Reward]``: label -> node); else None."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        annotation = args[0]
    if get_origin(annotation) is dict and len(get_args(annotation)) == 2 and get_args(annotation)[1] in COMPONENTS:
        return COMPONENTS[get_args(annotation)[1]], True
    return (COMPONENTS[annotation], False) if annotation in COMPONENTS else None


def check_node(value: Any, section: str, registry) -> dict[str, Any]:
    """A nested component's node (a registry name or ``{name: ..., arguments}``) as a checked ``{name, ...}`` dict; a
    NodeError names the first key (dotted below the node) that is wrong."""
    node = {"name": value} if isinstance(value, str) else value
    if not isinstance(node, dict) or not isinstance(node.get("name"), str):
        raise NodeError("", f"expected a {section[:-1]} node: a registry name or {{name: ..., its arguments}}")
    args = {k: v for k, v in node.items() if k != "name"}
    try:
        entry = registry.get(section, node["name"])
        impl = entry.load()
    except (ConfigError, ImportError, AttributeError) as e:  # the node's name (a bare name: the node itself)
        raise NodeError("" if isinstance(value, str) else "name", str(e)) from None
    return {"name": node["name"], **check_arguments(args, entry, impl, section, registry)}


def check_arguments(args: dict[str, Any], entry: Entry, impl, section: str, registry=None) -> dict[str, Any]:
    """``args`` (a node's own keys) converted to the annotated types of ``impl``'s parameters (a component-typed
    one's nodes checked through ``registry``); a NodeError names the first key that is unknown, of the wrong type,
    or a required parameter the node and the entry's defaults leave out."""
    own, any_key = parameters(impl, section)
    kind = KIND_NAMES.get(section, section[:-1] if section.endswith("s") else section)
    out = {}
    for key, value in args.items():
        p = own.get(key)
        if p is None:
            if any_key:
                out[key] = value
                continue
            hint = suggest(key, own) if own else " (it takes no arguments)"
            raise NodeError(key, f"{kind} {entry.name!r} takes no {key!r}{hint}")
        nested = component(p.annotation)
        if nested is not None and registry is not None:
            out[key] = nested_nodes(key, value, *nested, registry)
            continue
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
        filled = filled or (section in RUN_REWARD and component(p.annotation) == ("rewards", False))
        if p.default is inspect.Parameter.empty and not filled:
            raise NodeError(name, f"{kind} {entry.name!r} needs {name!r}: give it in the config")
    return out


def nested_nodes(key: str, value: Any, section: str, many: bool, registry) -> Any:
    """The checked node(s) of a component-typed argument ``key``: one, or a mapping of label -> node."""
    if not many:
        try:
            return check_node(value, section, registry)
        except NodeError as e:
            raise NodeError(".".join(filter(None, (key, e.key))), str(e)) from None
    if not isinstance(value, dict) or not value:
        raise NodeError(key, f"expected a mapping of label -> {section[:-1]} node, got {value!r}")
    out = {}
    for label, node in value.items():
        try:
            out[label] = check_node(node, section, registry)
        except NodeError as e:
            raise NodeError(".".join(filter(None, (key, str(label), e.key))), str(e)) from None
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
    if annotation in COMPONENTS:
        return f"{COMPONENTS[annotation][:-1]} node"
    if get_origin(annotation) in (dict, list, tuple):
        return f"{get_origin(annotation).__name__}[{', '.join(type_text(a) for a in get_args(annotation))}]"
    return inspect.formatannotation(annotation).replace("typing.", "")


BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "multiple_of": "multiple of"}

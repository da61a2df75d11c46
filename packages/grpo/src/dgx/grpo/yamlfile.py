"""YAML files read safely: configs and registry files (a file from elsewhere cannot make the loader hang, fill the
memory or crash), with YAML's merge keys, and every problem as one line naming the file and the line.

Safe means the document is data only (``yaml.SafeLoader``: no Python objects), a key given twice in one mapping is an
error (YAML would let the last one win), and the document's size, counted with every alias expanded, and its nesting
depth are capped, so an alias bomb ("billion laughs") or a deeply nested value is refused before it is built.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from dgx.grpo.errors import ConfigError

MAX_VALUES = 100_000  # scalars, sequences and mappings, every alias expanded
MAX_DEPTH = 50  # nested sequences and mappings
MAX_SHOWN = 80  # characters of a key or value quoted in an error


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error; merge keys (``<<: *common``) merge."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # the merged keys may be overridden, as YAML says
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {shorten(key)} (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def shorten(value, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` cut to ``limit`` characters with the length it had."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} characters)"


def problem(e: yaml.YAMLError) -> str:
    """A YAML error as one line: `` line L, column C: invalid YAML: problem``."""
    mark = getattr(e, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{where} invalid YAML: {what[:200]}"


def _check_shape(root: yaml.Node, source: str) -> None:
    """The node graph's size with every alias expanded, and its depth, within the caps (iteratively: a deep
    document must not exhaust the interpreter's stack here either)."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"{source}: line {node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep; "
                "a config is a few levels of mappings"
            )
        children = _children(node)
        if done or not children:
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            if size[id(node)] > MAX_VALUES:
                raise ConfigError(
                    f"{source}: line {node.start_mark.line + 1}: expands to more than {MAX_VALUES:,} values "
                    "(YAML aliases repeat what they name); a config is a few hundred"
                )
            continue
        if id(node) in size:
            continue
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse(text: str, source: str):
    """The data of one YAML document (``source`` names it in errors); None for an empty one."""
    try:
        loader = _UniqueKeys(text)  # its reader refuses control characters already
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}:{problem(e)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_shape(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}:{problem(e)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read (more than {MAX_DEPTH} levels are refused)") from None
    finally:
        loader.dispose()


def read(path: str | Path, what: str = "a YAML config") -> object:
    """A YAML file's data; every problem (missing, a folder, unreadable, not UTF-8 text, not YAML, too large once
    expanded, too deep) is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'file not found'}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file ({what} is UTF-8 text)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file ({what} is UTF-8 text)")
    return parse(text, str(path))

"""Pages generated from the code, so they cannot drift from it.

Committed, so that they read on GitHub too: between ``<!-- config-reference -->`` and ``<!-- /config-reference -->``
a table per config section (every field, its type, default and description, read from the pydantic models in
``dgx.grpo.config``), and between ``<!-- registry -->`` and ``<!-- /registry -->`` the built-in registry's components,
section by section. ``python scripts/docs_hooks.py`` rewrites them; a test fails when they are not current.

At build time (mkdocs hook): ``<!-- benchmarks -->`` becomes BENCHMARKS.md and ``<!-- experiments -->`` the research
records' index (research/experiments/README.md), its folder links as repository paths.
"""

from __future__ import annotations

import json

from pydantic import BaseModel


def _type(ann) -> str:
    return (getattr(ann, "__name__", None) if isinstance(ann, type) else None) or str(ann).replace("typing.", "")


def _is_model(ann) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _optional_model(ann) -> type[BaseModel] | None:
    """The model of an optional nested section (``EmaConfig | None``), or None."""
    return next((a for a in getattr(ann, "__args__", ()) if _is_model(a)), None)


def _tables(model: type[BaseModel], prefix: str) -> list[str]:
    """One table of ``model``'s plain fields, then one per nested model (``sampler.noise``)."""
    rows, nested = [], []
    for name, f in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if _is_model(f.annotation):
            nested.append((f.annotation, key))
            continue
        default = f.default_factory() if f.default_factory is not None else f.default
        text = (f.description or "").replace("|", "\\|")
        typ = _type(f.annotation).replace(" | ", " or ").replace("dgx.grpo.config.", "")
        shown = "required" if f.is_required() else f"`{json.dumps(default)}`"
        rows.append(f"| `{key}` | `{typ}` | {shown} | {text} |")
        if (sub := _optional_model(f.annotation)) is not None:  # its keys when it is given
            nested.append((sub, key))
    out = []
    if rows:
        out = [
            f"### `{prefix or 'top level'}`",
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    for sub, key in nested:
        out += _tables(sub, key)
    return out


def config_reference() -> str:
    from dgx.grpo.config import RunConfig

    return "\n".join(_tables(RunConfig, "")) + "\n"


def registry_reference() -> str:
    """Each section's entries; for the kinds whose node carries its own arguments, those arguments (from the
    implementation's signature: name, type, default)."""
    from dgx.grpo.config import NODES
    from dgx.grpo.nodes import describe
    from dgx.grpo.registry import Registry

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    reg, out = Registry(), []
    for section, entries in reg.sections.items():
        if not entries:
            continue
        args = section in {kind for _, kind in NODES}
        out += [f"### `{section}`", ""]
        out += (
            ["| name | implementation | what | arguments |", "|---|---|---|---|"]
            if args
            else [
                "| name | implementation | what |",
                "|---|---|---|",
            ]
        )
        for e in entries.values():
            row = f"| `{e.name}` | `{e.impl}` | {cell(e.description)} |"
            if args:
                row += " " + "<br>".join(f"`{cell(a)}`" for a in describe(e.load(), section)) + " |"
            out.append(row)
        out.append("")
    return "\n".join(out) + "\n"


def benchmarks() -> str:
    """BENCHMARKS.md (repository root) one heading level down, its image paths relative to docs/."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "BENCHMARKS.md").read_text()
    text = text.replace("](docs/", "](")
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines()) + "\n"


def experiments() -> str:
    """The research index one heading level down; ``[name](folder/)`` links become repository paths (the records
    live outside the site)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "research/experiments/README.md").read_text()
    text = re.sub(r"\[([^\]]+)\]\(([a-z0-9_]+)/\)", r"`research/experiments/\2/`", text)
    lines = text.splitlines()[1:]  # the page has its own title
    return "\n".join("#" + line if line.startswith("#") else line for line in lines) + "\n"


GENERATED = {"config-reference": config_reference, "registry": registry_reference}  # committed in the pages
PAGES = ("docs/guide/configs.md", "docs/guide/components.md")


def refresh(markdown: str) -> str:
    """``markdown`` with each committed region (``<!-- NAME -->`` ... ``<!-- /NAME -->``) generated anew."""
    for name, make in GENERATED.items():
        start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
        if start in markdown:
            head, rest = markdown.split(start, 1)
            tail = rest.split(end, 1)[1] if end in rest else rest
            markdown = f"{head}{start}\n\n{make()}\n{end}{tail}"
    return markdown


def on_page_markdown(markdown: str, **_) -> str:
    markdown = refresh(markdown)
    if "<!-- benchmarks -->" in markdown:
        markdown = markdown.replace("<!-- benchmarks -->", benchmarks())
    if "<!-- experiments -->" in markdown:
        markdown = markdown.replace("<!-- experiments -->", experiments())
    return markdown


if __name__ == "__main__":  # rewrite the committed regions
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for page in PAGES:
        path = root / page
        path.write_text(refresh(path.read_text()))
        print(f"wrote {page}")

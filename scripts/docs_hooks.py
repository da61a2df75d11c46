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
import re

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


# the site's JavaScript and CSS, served from its own assets (no CDN): npm packages at pinned versions, fetched when the
# docs are built (into docs/assets/vendor/, not committed); package -> its files under package/dist/
VENDOR = {
    "mermaid@11.4.1": ["mermaid.min.js"],
    "katex@0.16.22": ["katex.min.js", "katex.min.css", "contrib/auto-render.min.js", "fonts/"],
}


def fetch_assets(folder) -> None:
    """Unpack VENDOR's files into ``folder`` (mermaid.min.js, katex.min.js, katex.min.css, auto-render.min.js,
    fonts/) with ``npm pack``, unless they are there."""
    import subprocess
    import tarfile
    import tempfile
    from pathlib import Path

    folder = Path(folder)
    if (folder / "fetched.json").is_file() and json.loads((folder / "fetched.json").read_text()) == VENDOR:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for package, files in VENDOR.items():
            try:
                subprocess.run(["npm", "pack", package, "--silent"], cwd=tmp, check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError) as e:
                raise RuntimeError(f"could not fetch {package} from the npm registry for the docs' assets: {e}") from e
            tgz = next(Path(tmp).glob(package.split("@")[0] + "-*.tgz"))
            with tarfile.open(tgz) as tar:
                for member in tar.getmembers():
                    name = member.name.removeprefix("package/dist/")
                    if member.isfile() and any(name == f or (f.endswith("/") and name.startswith(f)) for f in files):
                        target = (
                            folder / Path(name).relative_to(Path(name).parts[0])
                            if name.startswith("contrib/")
                            else folder / name
                        )
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(tar.extractfile(member).read())
    (folder / "fetched.json").write_text(json.dumps(VENDOR))


def on_pre_build(config, **_) -> None:
    from pathlib import Path

    fetch_assets(Path(config["docs_dir"]) / "assets" / "vendor")


PACKAGES = ("sampler", "rewards", "eval", "grpo")  # in the order their dependencies point


def public_modules() -> dict[str, list[str]]:
    """Every public module of the four packages (no leading underscore), by package."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "packages"
    found = {}
    for pkg in PACKAGES:
        src = root / pkg / "src" / "dgx" / pkg
        names = [p.relative_to(src.parent.parent).with_suffix("") for p in src.rglob("*.py")]
        found[pkg] = sorted(
            ".".join(n.parts if n.name != "__init__" else n.parts[:-1])
            for n in names
            if not any(part.startswith("_") and part != "__init__" for part in n.parts)
        )
    return found


def on_config(config, **_):
    """The API reference's nav: its index (api.md), then a page per public module, package by package."""
    modules = public_modules()
    for i, item in enumerate(config["nav"]):
        if isinstance(item, dict) and "API reference" in item:
            pages = [{f"dgx.{pkg}": [f"api/{m}.md" for m in modules[pkg]]} for pkg in PACKAGES]
            config["nav"][i] = {"API reference": ["api.md", *pages]}
    return config


def on_files(files, config, **_):
    """A generated page per public module: its docstrings and typed signatures (mkdocstrings, griffe)."""
    from mkdocs.structure.files import File

    for mods in public_modules().values():
        for m in mods:
            files.append(File.generated(config, f"api/{m}.md", content=f"# `{m}`\n\n::: {m}\n"))
    return files


def api_index() -> str:
    """A list per package of its public modules' pages, each with the first line of the module's docstring."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "packages"
    out = []
    for pkg, mods in public_modules().items():
        out += [f"### `dgx.{pkg}`", ""]
        for m in mods:
            parts = m.split(".")
            path = root / pkg / "src" / Path(*parts).with_suffix(".py")
            path = path if path.is_file() else root / pkg / "src" / Path(*parts) / "__init__.py"
            doc = (ast.get_docstring(ast.parse(path.read_text())) or "").strip().split("\n")[0]
            out.append(f"- [`{m}`](api/{m}.md): {doc}".rstrip(": "))
        out.append("")
    return "\n".join(out)


GENERATED = {"config-reference": config_reference, "registry": registry_reference, "api-index": api_index}
PAGES = ("docs/guide/configs.md", "docs/guide/components.md", "docs/api.md")  # those with committed regions


def refresh(markdown: str) -> str:
    """``markdown`` with each committed region (``<!-- NAME -->`` ... ``<!-- /NAME -->``) generated anew."""
    for name, make in GENERATED.items():
        start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
        if start in markdown:
            head, rest = markdown.split(start, 1)
            tail = rest.split(end, 1)[1] if end in rest else rest
            markdown = f"{head}{start}\n\n{make()}\n{end}{tail}"
    return markdown


ITEM = re.compile(r"^([-*]|\d+\.) ")


def separate_lists(markdown: str) -> str:
    """A blank line before a list that follows a paragraph or a list item's block (GitHub renders such a list; Python
    Markdown reads it as the paragraph's text), outside code fences."""
    out, fence = [], False
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            fence = not fence
        before = out[-1] if out else ""
        indent = len(before) - len(before.lstrip())
        if not fence and ITEM.match(line) and before.strip() and not ITEM.match(before) and indent in (0, 2, 4):
            if not before.lstrip().startswith(("|", "#", ">", "<", "```")):
                out.append("")
        out.append(line)
    return "\n".join(out)


def on_page_markdown(markdown: str, **_) -> str:
    markdown = separate_lists(refresh(markdown))
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

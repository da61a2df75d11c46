"""Sessions: tests, lint, docs (the mkdocs site), bench (benchmark tables), isolation (each package installs alone).

``tests``, ``lint`` and ``bench`` run in the current environment (./setup.sh); ``isolation``
builds a fresh virtualenv per package.
"""

import sys

import nox

nox.options.sessions = ["lint", "tests"]
PACKAGES = {  # package -> local packages it needs (dependencies point one way)
    "sampler": [],
    "rewards": ["sampler"],
    "eval": ["sampler", "rewards"],
    "grpo": ["sampler", "rewards", "eval"],
}
ORDER = list(PACKAGES)


@nox.session(venv_backend="none")
def tests(session):
    session.run(sys.executable, "-m", "pytest", "-q", *session.posargs, env={"HF_HUB_OFFLINE": "1"})


PROCESS_WORDS = r"\b(session|issue)[ _-]?#?[0-9]+"  # how the work was organised is not the product's business


@nox.session(venv_backend="none")
def lint(session):
    """ruff check, ruff format --check, and no process words (a work session's or an issue's number) in tracked files or names."""
    import re
    import subprocess

    session.run(sys.executable, "-m", "ruff", "check", ".")
    session.run(sys.executable, "-m", "ruff", "format", "--check", ".")
    files = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    word = re.compile(PROCESS_WORDS, re.I)
    hits = [f for f in files if word.search(f) or "session" in f.rsplit("/", 1)[-1].lower()]
    for f in files:
        try:
            text = open(f, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue  # binary
        hits += [f"{f}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}" for m in word.finditer(text)]
    if hits:
        session.error("process words in the product:\n" + "\n".join(hits))


@nox.session(venv_backend="none")
def docs(session):
    """The documentation site (mkdocs, material theme) into site/, strict: a broken link or reference fails."""
    session.run(
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-d",
        "site",
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1", "NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session(venv_backend="none")
def bench(session):
    """The shapes-world tasks -> the tracked BENCHMARKS.md and docs/bench/ (`dgx bench --publish`; `-- --task
    mechanism`, `-- --quick` for a smoke run)."""
    session.run(
        sys.executable, "-m", "dgx.grpo.cli", "bench", "--publish", *session.posargs, env={"HF_HUB_OFFLINE": "1"}
    )


@nox.session(python=False)
def isolation(session):
    """Install each package alone (with only its local dependencies) in a fresh venv and import it."""
    import tempfile

    for pkg, deps in PACKAGES.items():
        with tempfile.TemporaryDirectory() as d:
            session.run(sys.executable, "-m", "venv", d)
            pip, py = f"{d}/bin/pip", f"{d}/bin/python"
            session.run(pip, "install", "-q", "torch==2.13.0", silent=True)
            session.run(pip, "install", "-q", *[f"packages/{p}" for p in deps + [pkg]], silent=True)
            above = ORDER[ORDER.index(pkg) + 1 :]
            check = f"import dgx.{pkg}; import importlib.util as u; bad = [p for p in {above!r} if u.find_spec('dgx.' + p)]; assert not bad, bad; print('dgx-{pkg} alone: ok')"
            session.run(py, "-c", check)
            if pkg == "rewards":  # the shapes-world weights ship as package data
                session.run(
                    py,
                    "-c",
                    "from importlib import resources as r; s = r.files('dgx.rewards.shapes'); "
                    "assert (s / 'weights' / 'model_index.json').is_file(); "
                    "assert (s / 'pickscore' / 'model.safetensors').is_file(); print('weights: ok')",
                )

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


@nox.session(venv_backend="none")
def lint(session):
    session.run(sys.executable, "-m", "ruff", "check", ".")


@nox.session(venv_backend="none")
def docs(session):
    """The documentation site (mkdocs, material theme) into site/, strict: a broken link or reference fails."""
    session.run(sys.executable, "-m", "mkdocs", "build", "--strict", "-d", "site", *session.posargs,
                env={"HF_HUB_OFFLINE": "1", "NO_MKDOCS_2_WARNING": "1"})


@nox.session(venv_backend="none")
def bench(session):
    """Full shapes-world ablation + cost table -> BENCHMARKS.md (`-- --quick` for a smoke run)."""
    session.run(sys.executable, "scripts/bench.py", *session.posargs, env={"HF_HUB_OFFLINE": "1"})


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
                session.run(py, "-c", "from importlib import resources as r; s = r.files('dgx.rewards.shapes'); "
                            "assert (s / 'weights' / 'model_index.json').is_file(); "
                            "assert (s / 'pickscore' / 'model.safetensors').is_file(); print('weights: ok')")

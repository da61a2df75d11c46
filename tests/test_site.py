"""The built site, as a reader's browser sees it offline: headless Chromium (Debian's `chromium`) on the site served
from 127.0.0.1 with every other host unreachable. The diagram becomes an SVG, the equations are typeset, nothing loads
from outside the site, and every nav page and internal link resolves."""

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPOSITORY = "https://example.org/owner/dgx"  # where a build names the repository (DGX_REPO_URL)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian's package; .ci/run installs it)")


class Refs(HTMLParser):
    """What a page loads (scripts, styles, images) and what it links to."""

    def __init__(self):
        super().__init__()
        self.loads, self.links = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe") and a.get("src"):
            self.loads.append(a["src"])
        if tag == "link" and a.get("href") and a.get("rel") != "canonical":
            self.loads.append(a["href"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_MKDOCS_2_WARNING": "1", "DGX_REPO_URL": REPOSITORY}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)]
    res = subprocess.run(build, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def dom(url: str) -> str:
    """The page's DOM after its scripts ran, with the network blocked but for 127.0.0.1."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000"]
    cmd += ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def test_the_diagram_is_drawn_and_the_equations_typeset_offline(site):
    _, url = site
    home = dom(url)
    assert re.search(r'<div class="diagram"[^>]*>\s*<svg', home), "the mermaid diagram is not an SVG"
    method = dom(url + "method/")
    blocks = len(re.findall(r'class="arithmatex"', method))
    assert blocks >= 9 and len(re.findall(r'class="katex-display"', method)) == blocks
    assert "katex-error" not in method


def test_nothing_loads_from_outside_the_site_and_every_link_resolves(site):
    out, _ = site
    pages = sorted(out.rglob("*.html"))
    outside, broken = [], []
    for page in pages:
        refs = Refs()
        refs.feed(page.read_text())
        here = "/" + page.relative_to(out).as_posix()
        outside += [(here, u) for u in refs.loads if urlparse(u).netloc]  # the site's own are relative
        for link in refs.links:
            target = urlparse(urljoin(here, link))
            if target.scheme or link.startswith(("mailto:", "#")):
                continue  # outside the site (the repository, the papers): allowed
            path = out / target.path.lstrip("/")
            if not (path.is_file() or (path / "index.html").is_file()):
                broken.append((here, link))
    assert not outside, outside[:5]
    assert not broken, broken[:10]
    nav = yaml.safe_load("nav:\n" + (ROOT / "mkdocs.yml").read_text().split("\nnav:\n")[1])["nav"]  # the last key

    def pages_of(node):
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [p for v in node.values() for p in pages_of(v)]
        return [p for v in node for p in pages_of(v)]

    for md in pages_of(nav):
        built = out / (md[: -len(".md")] + "/index.html" if not md.endswith("index.md") else "index.html")
        assert built.is_file() or (out / md.replace(".md", ".html")).is_file(), md


def test_the_api_pages_have_typed_argument_sections(site):
    """Every documented function's parameters in a table with their types and defaults (scripts/griffe_arguments.py),
    described by the docstring's sentence that names them."""
    out, _ = site
    page = (out / "api" / "dgx.grpo.trainer" / "index.html").read_text()
    train = page[page.index('id="dgx.grpo.trainer.train"') :]
    table = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", train[train.index("Parameters") : train.index("</table>")]))
    assert "stop_after int | None" in table and "the loop after that many iterations" in table, table[:2000]
    pages = sorted((out / "api").rglob("index.html"))
    with_tables = [p for p in pages if "doc-section-title" in p.read_text() and "Parameters" in p.read_text()]
    assert len(pages) >= 70 and len(with_tables) >= 0.8 * len(pages), (len(with_tables), len(pages))


def test_every_page_links_the_repository_it_was_built_with(site):
    out, _ = site
    pages = sorted(out.rglob("index.html"))
    assert pages and all(f'href="{REPOSITORY}" title="Go to repository"' in p.read_text() for p in pages)

"""`dgx data`: the paper's prompt sets from a pinned commit, checked by sha256 (or git blob id) and cached; tested
offline against a local HTTP server: a good download, a wrong checksum, a cut connection, offline mode and a file
pinned by its git blob id."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from dgx.grpo import data
from dgx.grpo.cli import main
from dgx.grpo.errors import ConfigError

GOOD = b"a photo of a cat\na red circle\n"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server of the files in ``files`` (path -> bytes); ``cut`` paths promise more bytes than they
    send. Its requests are counted."""
    files = {"/sets/good.txt": GOOD, "/sets/cut.txt": GOOD, "/sets/blob.jsonl": b'{"prompt": "a cat"}\n'}
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requests.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) * (10 if "cut" in self.path else 1)))
            self.end_headers()
            self.wfile.write(body)  # the cut file ends here, a tenth of what it promised

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("DGX_DATA_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("DGX_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    sha = hashlib.sha256(GOOD).hexdigest()
    monkeypatch.setattr(
        data,
        "SETS",
        {
            "good": data.DataFile("sets/good.txt", sha),
            "wrong": data.DataFile("sets/good.txt", "0" * 64),
            "cut": data.DataFile("sets/cut.txt", sha),
            # `git hash-object` of the served bytes, computed independently: sha1 of "blob <size>\0" + the bytes
            "blob": data.DataFile(
                "sets/blob.jsonl", git_blob=hashlib.sha1(b'blob 20\x00{"prompt": "a cat"}\n').hexdigest()
            ),
        },
    )
    yield files, requests
    httpd.shutdown()


def leftovers(tmp_path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path / "cache")) for p in (tmp_path / "cache").rglob("*") if p.is_file())


def test_a_good_download_is_checked_cached_and_not_fetched_again(server, tmp_path):
    _, requests = server
    path = data.fetch("good", progress=False)
    assert path.read_bytes() == GOOD and data.cached("good") == path and requests == ["/sets/good.txt"]
    assert data.fetch("good") == path and len(requests) == 1  # from the cache
    assert data.resolve("data://good") == str(path) and data.resolve("x/y.txt") == "x/y.txt"


def test_a_wrong_checksum_is_refused_and_nothing_is_cached(server, tmp_path):
    with pytest.raises(
        ConfigError, match=r"'wrong': the download is not the pinned file \(its sha256 is not 000000000000"
    ):
        data.fetch("wrong", progress=False)
    assert leftovers(tmp_path) == []


def test_a_cut_connection_leaves_no_half_file(server, tmp_path):
    with pytest.raises(ConfigError, match="'cut': download from .* failed"):
        data.fetch("cut", progress=False)
    assert leftovers(tmp_path) == []


def test_offline_mode_fails_in_one_line_without_a_request(server, tmp_path, monkeypatch):
    _, requests = server
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(main, ["data", "good"])
    assert res.exit_code == 2 and requests == []
    assert (
        res.output.strip()
        == "error: data set 'good' is not fetched and HF_HUB_OFFLINE=1: run `dgx data good` online first"
    )


def test_a_file_pinned_by_its_git_blob_id(server, tmp_path):
    files, _ = server
    assert data.fetch("blob", progress=False).read_bytes() == files["/sets/blob.jsonl"]
    data.local("blob").unlink()
    files["/sets/blob.jsonl"] = b'{"prompt": "a dog"}\n'  # changed upstream since the pinned commit
    with pytest.raises(ConfigError, match=r"'blob': the download is not the pinned file \(its git blob id is not"):
        data.fetch("blob", progress=False)
    assert leftovers(tmp_path) == []


def test_a_config_names_a_set_and_validates_before_it_is_fetched(server, tmp_path):
    from dgx.grpo.build import resolve_path
    from dgx.grpo.config import load

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: {name: shapes}\nprompts: {name: file, path: data://good}\neval: {max_prompts: 2}\n")
    assert any("data set 'good' is not fetched yet: `dgx data good`" in w for w in load(cfg).warnings)
    res = CliRunner().invoke(main, ["data"])
    assert res.exit_code == 0 and "good" in res.output and "not fetched" in res.output
    assert resolve_path("data://good") == str(data.local("good"))  # a run fetches it on first use
    assert not any("not fetched" in w for w in load(cfg).warnings)
    cfg.write_text("model: {name: shapes}\nprompts: {name: file, path: data://nope}\n")
    res = CliRunner().invoke(main, ["validate", str(cfg)])
    assert res.exit_code == 2 and "prompts.path: unknown data set 'data://nope' (known: data://good" in res.output

"""Rewards over HTTP: the wire format, the reward server under load, faults and malformed requests, a VLM judge, and
`dgx run` with a remote reward (the same rewards as in-process, bit for bit; a lost server stops the run in one line
and --resume continues once it is back)."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import torch
from dgx.grpo.build import build_reward
from dgx.grpo.config import RewardConfig
from dgx.grpo.registry import Registry
from dgx.rewards.base import RewardError
from dgx.rewards.judge import VLMJudge, parse_score
from dgx.rewards.remote import RemoteReward
from dgx.rewards.server import Background, app
from dgx.rewards.standins import judge_app
from dgx.rewards.wire import SAFETENSORS, WireError, decode, encode


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_the_wire_format_round_trips_and_names_what_is_malformed():
    x, prompts, metas = images(3, 0), ["a", "b", "c"], [{"tag": "t"}] * 3
    got, p, m = decode(*encode(x, prompts, metas))
    assert torch.equal(got, x) and p == prompts and m == metas  # float32: lossless
    got, _, m = decode(*encode(x, prompts, None, "png"))
    assert (got - x).abs().max() <= 0.5 / 255 + 1e-7 and m is None  # 8 bits per channel
    kind, body = encode(x, prompts, None)
    for bad_kind, bad_body, why in [
        ("text/plain", body, "content type"),
        (SAFETENSORS, b"not safetensors", "not a safetensors file"),
        (SAFETENSORS, encode(x, ["a"], None)[1], "prompts must be a list of 3 strings"),
        ("application/json", b"{", "not JSON"),
        ("application/json", b'{"images_png": ["%%%"], "prompts": ["a"]}', "not a base64 PNG"),
        (SAFETENSORS, encode(x * 2, prompts, None)[1], r"in \[0, 1\]"),
    ]:
        with pytest.raises(WireError, match=why):
            decode(bad_kind, bad_body)


@pytest.fixture(scope="module")
def pickscore():
    return build_reward(RewardConfig(name="shapes_pickscore"), Registry())


def load_test(url: str, pickscore, exact: bool) -> None:
    """4 concurrent clients x 50 batches of 2 images: every score is the in-process one of the same image."""
    failures: list[str] = []

    def client(k: int) -> None:
        remote = RemoteReward(url, retries=8, backoff=0.05)
        for b in range(50):
            x, prompts = images(2, 1000 * k + b), [f"a red circle {k}", f"two blue squares {b}"]
            got, want = remote(x, prompts), pickscore(x, prompts)
            scale = want.abs().max().item()  # relative to the scores' scale: a score near 0 has rounding of its own
            same = torch.equal(got, want) if exact else torch.allclose(got, want, rtol=1e-5, atol=1e-5 * scale)
            if not same:
                failures.append(f"client {k} batch {b}: {got.tolist()} != {want.tolist()}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]


def test_a_reward_server_under_load_scores_every_image_as_in_process(pickscore):
    """Batches scored as sent: bit for bit. Gathered across clients (batch window): within 1e-5 of the scores'
    scale (a batch of another size rounds differently)."""
    server = Background(app(pickscore))
    load_test(server.url, pickscore, exact=True)
    server.stop()
    batched = Background(app(pickscore, batch_window=0.02))
    load_test(batched.url, pickscore, exact=False)
    batched.stop()


def test_clients_recover_when_the_server_restarts_and_fail_in_one_line_when_it_is_gone(pickscore):
    server = Background(app(pickscore))
    port = int(server.url.rsplit(":", 1)[1])
    restarted = []

    def restart() -> None:  # down for about 0.3 s while the clients send
        server.stop()
        threading.Event().wait(0.3)
        restarted.append(Background(app(pickscore), port=port))

    threading.Timer(0.5, restart).start()
    load_test(server.url, pickscore, exact=True)
    assert restarted
    restarted[0].stop()
    with pytest.raises(RewardError, match=r"did not answer after 2 tries \(ConnectError"):
        RemoteReward(server.url, retries=1, backoff=0.01)(images(1, 0), ["a"])


def test_malformed_requests_get_a_4xx_and_the_server_keeps_serving(pickscore, monkeypatch):
    monkeypatch.setenv("DGX_REWARD_TOKEN", "s3cret")
    server = Background(app(pickscore))
    good_kind, good = encode(images(2, 0), ["a", "b"], None)
    auth = {"Authorization": "Bearer s3cret"}
    bad = [
        ({"Content-Type": good_kind}, good),  # no token
        ({**auth, "Content-Type": "text/plain"}, good),
        ({**auth, "Content-Type": good_kind}, b""),
        ({**auth, "Content-Type": good_kind}, b"\x00" * 64),
        ({**auth, "Content-Type": good_kind}, encode(images(2, 0), ["a"], None)[1]),
        ({**auth, "Content-Type": good_kind}, encode(images(2, 0), ["a", "b"], [{"x": 1}])[1]),
        ({**auth, "Content-Type": "application/json"}, b"[1, 2]"),
        ({**auth, "Content-Type": "application/json"}, b'{"images_png": [], "prompts": []}'),
        ({**auth, "Content-Type": "application/json"}, b'{"images_png": ["aGVsbG8="], "prompts": ["a"]}'),
        ({**auth, "Content-Type": good_kind}, encode(torch.zeros(2, 1, 8, 8), ["a", "b"], None)[1]),
    ]
    for headers, body in bad:
        reply = httpx.post(server.url + "/score", headers=headers, content=body)
        assert 400 <= reply.status_code < 500 and reply.json()["error"], (reply.status_code, reply.text)
    assert httpx.get(server.url + "/health").status_code == 401
    remote = RemoteReward(server.url)
    remote.load()
    assert remote.name == "pickscore" and torch.equal(
        remote(images(2, 5), ["a", "b"]), pickscore(images(2, 5), ["a", "b"])
    )
    server.stop()


def test_a_vlm_judge_parses_its_score_and_names_an_unparseable_reply():
    assert parse_score("Score: 7", 1, 10) == 7 and parse_score("I'd say 8.5/10", 1, 10) == 8.5
    assert parse_score("Out of 10, my score is 3", 1, 10) == 3  # the number after "score"
    with pytest.raises(RewardError, match="has no score: 'a lovely picture'"):
        parse_score("a lovely picture", 1, 10)
    with pytest.raises(RewardError, match="outside"):
        parse_score("Score: 42", 1, 10)
    server = Background(judge_app())
    judge = VLMJudge(server.url + "/v1", model="stand-in", workers=3)
    x = images(5, 1)
    want = 1 + 9 * (x.clamp(0, 1) * 255).round() / 255
    assert judge(x, ["a cat"] * 5) == pytest.approx(want.mean((1, 2, 3)), abs=1e-3)
    server.stop()


def test_dgx_run_with_a_remote_reward_matches_in_process_and_resumes_after_the_server_is_lost(
    tmp_path, tiny_pipe_dir, monkeypatch
):
    from click.testing import CliRunner
    from dgx.grpo.cli import main
    from dgx.rewards.ink import Ink
    from dgx_test_helpers import tiny_config

    tiny_config(tmp_path, tiny_pipe_dir)  # the tiny model's reg.yaml and cfg.yaml
    server = Background(app(Ink()))

    def run(name: str, reward: str, *extra: str):
        return CliRunner().invoke(
            main,
            [
                "run",
                str(tmp_path / "cfg.yaml"),
                "--out",
                str(tmp_path / name),
                "--set",
                f"reward={reward}",
                "--set",
                "train.iterations=3",
                "--set",
                "eval.max_prompts=2",
                *extra,
            ],
        )

    def rewards(name: str) -> list:
        rows = (tmp_path / name / "default" / "seed_0" / "metrics.jsonl").read_text().splitlines()
        return [(r["reward_mean"], r["dense_mean"]) for r in map(json.loads, rows)]

    assert run("local", "{name: ink}").exit_code == 0
    remote = f"{{name: remote, url: '{server.url}', retries: 1, backoff: 0.05}}"
    assert run("remote", remote).exit_code == 0
    assert rewards("remote") == rewards("local")  # bit for bit

    calls = []
    real = RemoteReward.__call__

    def lose_server(self, *a, **k):  # the server goes away during the second iteration
        calls.append(1)
        if len(calls) == 3:
            server.stop()
        return real(self, *a, **k)

    monkeypatch.setattr(RemoteReward, "__call__", lose_server)
    lost = run("lost", remote)
    assert lost.exit_code != 0 and "did not answer after 2 tries" in lost.output
    assert len([ln for ln in lost.output.splitlines() if ln.startswith("error:")]) == 1
    ckpts = tmp_path / "lost" / "default" / "seed_0" / "checkpoints"
    assert (ckpts / "iter_00000").is_dir()
    monkeypatch.setattr(RemoteReward, "__call__", real)
    back = Background(app(Ink()), port=int(server.url.rsplit(":", 1)[1]))
    resumed = run("lost", remote, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert rewards("lost") == rewards("local")
    back.stop()


def test_dgx_serve_reward_hosts_a_registry_reward_and_refuses_an_unknown_one(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    from click.testing import CliRunner
    from dgx.grpo.cli import main
    from dgx.rewards.ink import Ink

    bad = CliRunner().invoke(main, ["serve-reward", "inky"])
    assert bad.exit_code == 2 and "unknown reward 'inky'; did you mean 'ink'" in bad.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "dgx.grpo.cli",
        "serve-reward",
        "ink",
        "--set",
        "reward.background=0.5",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        remote = RemoteReward(f"http://127.0.0.1:{port}", retries=0)
        for _ in range(300):
            try:
                remote.load()
                break
            except RewardError:
                time.sleep(0.1)
        x = images(3, 2)
        assert remote.name == "ink" and torch.equal(remote(x, ["a"] * 3), Ink(background=0.5)(x, ["a"] * 3))
    finally:
        server.terminate()
        server.wait(30)

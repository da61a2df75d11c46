"""A reward server: any dgx reward behind HTTP (Starlette, served by uvicorn), in the wire format of
``dgx.rewards.wire``. ``dgx serve-reward`` builds the reward and runs it.

By default each request's batch is scored as sent, one at a time, so a remote score equals the in-process one bit
for bit. With ``batch_window`` > 0 (seconds), requests whose images share a size and that arrive within the window are
scored as one batch and split again: fewer, larger forward passes, scores within a batched model's rounding.
A malformed request gets a 4xx with its reason and the server keeps serving; a reward that fails on a well-formed
batch gets a 422 with the reward's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
from dataclasses import dataclass, field

import torch
from dgx.rewards.base import Reward
from dgx.rewards.wire import TOKEN_ENV, WireError, decode
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_BODY = 1 << 30  # bytes of one request (1 GiB: 1,000 float32 images of 512 x 512)


@dataclass
class _Pending:
    images: torch.Tensor
    prompts: list[str]
    metadata: list[dict] | None
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def app(reward: Reward, batch_window: float = 0.0, max_batch: int = 256, token: str | None = None) -> Starlette:
    """The server of ``reward`` (a Starlette application).

    Args:
        reward: The reward it scores with.
        batch_window: Seconds a request waits for others to score with it in one batch (0: none).
        max_batch: The most images scored in one batch.
        token: Required as a bearer token when set (default ``$DGX_REWARD_TOKEN``).
    """
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    lock = asyncio.Lock()
    queue: asyncio.Queue[_Pending] = asyncio.Queue()
    name = getattr(reward, "name", type(reward).__name__)

    def score(images, prompts, metadata) -> list[float]:
        with torch.no_grad():
            return [float(s) for s in reward(images, prompts, metadata).float().cpu()]

    async def batcher() -> None:
        while True:
            first = [await queue.get()]
            await asyncio.sleep(batch_window)
            while not queue.empty() and sum(len(p.prompts) for p in first) < max_batch:
                first.append(queue.get_nowait())
            for group in _same_size(first):
                await _score_group(group, score)

    async def health(request: Request) -> JSONResponse:
        return _refused(request, token) or JSONResponse({"status": "ok", "reward": name})

    async def score_endpoint(request: Request) -> JSONResponse:
        refused = _refused(request, token)
        if refused:
            return refused
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            return JSONResponse({"error": f"body over {MAX_BODY} bytes: send smaller batches"}, status_code=413)
        try:
            images, prompts, metadata = decode(request.headers.get("content-type", ""), await request.body())
        except WireError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        try:
            if batch_window > 0:
                pending = _Pending(images, prompts, metadata)
                await queue.put(pending)
                scores = await pending.done
            else:
                async with lock:  # one batch at a time on the reward's device
                    scores = await run_in_threadpool(score, images, prompts, metadata)
        except Exception as e:  # noqa: BLE001  (the reward's own failure on a well-formed batch, as the client's error)
            return JSONResponse({"error": f"reward {name!r}: {type(e).__name__}: {e}"}, status_code=422)
        return JSONResponse({"scores": scores})

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        task = asyncio.get_running_loop().create_task(batcher()) if batch_window > 0 else None
        yield
        if task is not None:
            task.cancel()

    routes = [Route("/health", health), Route("/score", score_endpoint, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


def _refused(request: Request, token: str | None) -> JSONResponse | None:
    if token is None:
        return None
    given = request.headers.get("authorization", "")
    if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return None
    return JSONResponse({"error": "missing or wrong bearer token (DGX_REWARD_TOKEN)"}, status_code=401)


def _same_size(pending: list[_Pending]) -> list[list[_Pending]]:
    groups: dict[tuple, list[_Pending]] = {}
    for p in pending:
        groups.setdefault(tuple(p.images.shape[1:]), []).append(p)
    return list(groups.values())


async def _score_group(group: list[_Pending], score) -> None:
    """Score the requests of ``group`` as one batch and answer each with its own slice."""
    images = torch.cat([p.images for p in group])
    prompts = [t for p in group for t in p.prompts]
    metadata = None if any(p.metadata is None for p in group) else [m for p in group for m in p.metadata]
    try:
        scores = await run_in_threadpool(score, images, prompts, metadata)
    except Exception as e:  # noqa: BLE001  (every request of the batch gets the reward's failure)
        for p in group:
            p.done.set_exception(e)
        return
    start = 0
    for p in group:
        p.done.set_result(scores[start : start + len(p.prompts)])
        start += len(p.prompts)


def serve(
    reward: Reward, host: str = "127.0.0.1", port: int = 8765, batch_window: float = 0.0, max_batch: int = 256
) -> None:
    """Run the server of ``reward`` until interrupted.

    Args:
        reward: The reward it scores with.
        host: The address it listens on.
        port: The port it listens on.
        batch_window: Seconds a request waits for others to score with it in one batch (0: none).
        max_batch: The most images scored in one batch.
    """
    import uvicorn

    uvicorn.run(app(reward, batch_window, max_batch), host=host, port=port, log_level="warning")


class Background:
    """An ASGI ``application`` (``app(reward)``) served in a daemon thread of this process, on a free local port
    (tests and stand-ins): ``url``, and ``stop()``."""

    def __init__(self, application, port: int = 0):
        import socket
        import threading
        import time

        import uvicorn

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may take the port back at once
        sock.bind(("127.0.0.1", port))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(application, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join()

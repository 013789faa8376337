"""A fake OpenAI-compatible chat-completions server on loopback (aiohttp, in a thread of its own).

It checks every request as a strict server would — the route, the bearer token, the model name,
a bounded ``max_tokens``, one text part and one image given as a JPEG data URL no larger than
``max_image_side`` — and answers from a script of :class:`Reply` values (then the default reply):
a caption, any JSON content, a raw body, an HTTP error, or no answer at all until the server stops
(so the client's timeout fires, without any sleep in the test). Malformed requests get a 400 and
are listed in :attr:`FakeOpenAI.problems`, which tests assert empty.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

DATA_URL = "data:image/jpeg;base64,"


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``content`` is the message content (any JSON value)."""

    content: Any = "a quiet beach with small waves under a blue sky"
    status: int = 200
    body: str | None = None  # sent as is instead of a chat completion
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (the server stops waiting when it stops)


@dataclass(frozen=True)
class Received:
    """A well-formed request, as the server understood it."""

    model: str
    max_tokens: int
    question: str
    image_size: tuple[int, int]  # (width, height) of the decoded JPEG
    authorization: str | None


class FakeOpenAI:
    """``with FakeOpenAI(model="m", api_key="k") as server: ... server.url ...``"""

    def __init__(
        self, *, model: str = "tiny-vlm", api_key: str | None = None, max_tokens: int = 512,
        max_image_side: int = 768,
    ) -> None:  # fmt: skip
        self.model = model
        self.api_key = api_key
        self.max_tokens = max_tokens
        self.max_image_side = max_image_side
        self.default = Reply()
        self.script: deque[Reply] = deque()
        self.received: list[Received] = []
        self.problems: list[str] = []
        self.calls = 0  # every request, well-formed or not
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-openai", daemon=True)
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The API base, as ``OUTPAINT_CAPTIONER_URL`` takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def answer(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order (then with :attr:`default`)."""
        self.script.extend(replies)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._release = asyncio.Event()
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _stop(self) -> None:
        assert self._release is not None and self._runner is not None
        self._release.set()
        await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        authorization = request.headers.get("Authorization")
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.")
        try:
            body = await request.json()
            received = self._check(body, authorization)
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            self.problems.append(f"{type(exc).__name__}: {exc}")
            return _error(400, f"bad request: {exc}")
        if received.model != self.model:
            return _error(404, f"The model `{received.model}` does not exist.")
        self.received.append(received)
        reply = self.script.popleft() if self.script else self.default
        if reply.hang:
            assert self._release is not None
            await self._release.wait()
        if reply.body is not None:
            return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
        if reply.status != 200:
            return _error(reply.status, "scripted failure", reply.headers)
        return web.json_response(_completion(received.model, reply.content), headers=reply.headers)

    def _check(self, body: dict[str, Any], authorization: str | None) -> Received:
        max_tokens = body["max_tokens"]
        assert isinstance(max_tokens, int) and 0 < max_tokens <= self.max_tokens, f"max_tokens {max_tokens}"
        (message,) = body["messages"]
        assert message["role"] == "user", "one user message"
        texts = [p["text"] for p in message["content"] if p["type"] == "text"]
        images = [p["image_url"]["url"] for p in message["content"] if p["type"] == "image_url"]
        assert len(texts) == 1 and len(images) == 1, "one text part and one image part"
        assert images[0].startswith(DATA_URL), "the image is a JPEG data URL"
        try:
            picture = Image.open(io.BytesIO(base64.b64decode(images[0][len(DATA_URL) :], validate=True)))
        except (binascii.Error, OSError) as exc:
            raise ValueError(f"the image does not decode: {exc}") from exc
        assert picture.format == "JPEG", f"the image is {picture.format}"
        assert max(picture.size) <= self.max_image_side, f"the image is {picture.size}"
        return Received(body["model"], max_tokens, texts[0], picture.size, authorization)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "code": status}}, status=status, headers=headers)


def _completion(model: str, content: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }

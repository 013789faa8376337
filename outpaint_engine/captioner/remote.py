"""The remote backend: an OpenAI-compatible chat-completions server with image input.

``POST {url}/chat/completions`` with the question and the picture as a JPEG data URL — what
``vllm serve``, Ollama, LM Studio, llama.cpp's ``llama-server`` and hosted APIs speak. One time
budget covers all tries; 429, 5xx and connection errors are retried with a doubling back-off (a
server's ``Retry-After`` wins), other answers are final. The API key goes in the ``Authorization``
header only: never in a log line, a reason or this object's repr.
"""

from __future__ import annotations

import logging
import time

import httpx
from PIL import Image
from pydantic import SecretStr

from outpaint_engine.captioner import CaptionError
from outpaint_engine.captioner.prompt import jpeg_data_url

log = logging.getLogger(__name__)

TIMED_OUT = "the captioner timed out"
UNREACHABLE = "the captioner is unreachable"
NOT_UNDERSTOOD = "the captioner's answer was not understood"
MAX_RETRY_AFTER_S = 30.0


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


class OpenAICaptioner:
    """Captions from ``model`` on the server at ``url`` (its base, e.g. ``http://host:8000/v1``)."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: SecretStr | None = None,
        timeout_s: float = 30.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        max_tokens: int = 60,
    ) -> None:
        base = httpx.URL(url.strip())
        self.endpoint = base.copy_with(path=base.path.rstrip("/") + "/chat/completions")
        self.model = model
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        key = api_key.get_secret_value() if api_key else ""
        self._client = httpx.Client(headers={"Authorization": f"Bearer {key}"} if key else {})

    @property
    def where(self) -> str:
        """The endpoint without any user:password or query part, fit for a log line."""
        return str(self.endpoint.copy_with(username=None, password=None, query=None))

    def __repr__(self) -> str:
        return f"OpenAICaptioner({self.where!r}, model={self.model!r})"

    def close(self) -> None:
        self._client.close()

    def describe(self, picture: Image.Image, question: str) -> str:
        body = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": question},
                        {"type": "image_url", "image_url": {"url": jpeg_data_url(picture)}},
                    ],
                }
            ],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
        deadline = time.monotonic() + self.timeout_s
        for attempt in range(self.retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CaptionError(TIMED_OUT, f"no answer within {self.timeout_s:g} s from {self.where}")
            try:
                response = self._client.post(self.endpoint, json=body, timeout=remaining)
            except httpx.TimeoutException as exc:  # the whole budget was spent waiting
                raise CaptionError(
                    TIMED_OUT, f"no answer within {self.timeout_s:g} s from {self.where}"
                ) from exc
            except httpx.TransportError as exc:
                failure = CaptionError(UNREACHABLE, f"{self.where}: {type(exc).__name__}: {exc}")
                wait = self.backoff_s * 2**attempt
            else:
                if response.is_success:
                    return _answer_text(response)
                failure = _refusal(response, self.where)
                if not _retryable(response.status_code):
                    raise failure
                wait = _retry_after(response) or self.backoff_s * 2**attempt
            if attempt == self.retries or time.monotonic() + wait >= deadline:
                break
            log.debug("captioner: %s; try %d of %d in %.2f s", failure, attempt + 2, self.retries + 1, wait)
            time.sleep(wait)
        raise failure


def _refusal(response: httpx.Response, where: str) -> CaptionError:
    status = response.status_code
    if status in (401, 403):
        return CaptionError(
            f"the captioner refused the API key (HTTP {status})",
            f"check OUTPAINT_CAPTIONER_API_KEY for {where}",
        )
    if status == 404:
        return CaptionError(
            "the captioner answered HTTP 404",
            f"is OUTPAINT_CAPTIONER_URL the API base (often ending in /v1) and the model served? {where}",
        )
    if _retryable(status):
        return CaptionError(f"the captioner answered HTTP {status}", where)
    return CaptionError(f"the captioner refused the request (HTTP {status})", where)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None  # absent, or an HTTP date: use the back-off
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _answer_text(response: httpx.Response) -> str:
    """The text of the first choice (a string, or the text parts of a list of parts)."""
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError) as exc:
        raise CaptionError(NOT_UNDERSTOOD, f"not a chat completion: {response.text[:80]!r}") from exc
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        content = " ".join(p for p in parts if isinstance(p, str))
    if not isinstance(content, str):
        raise CaptionError(NOT_UNDERSTOOD, f"its content is {type(content).__name__}, not text")
    return content

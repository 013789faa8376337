"""A fake OpenAI-compatible chat-completions server for the captioner tests (see server.py)."""

from tests.fakeopenai.server import FakeOpenAI, Received, Reply

__all__ = ["FakeOpenAI", "Received", "Reply"]

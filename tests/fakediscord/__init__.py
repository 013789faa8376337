"""A fake Discord (REST + gateway websocket + attachment CDN) on loopback for the real discord.py.

See README.md in this folder for how to use it in tests.
"""

from .models import (
    ApiError,
    Channel,
    GatewayRecord,
    Guild,
    InteractionRecord,
    MessageVersion,
    RequestRecord,
    StoredAttachment,
    StoredMessage,
    Upload,
    UploadedFile,
    User,
)
from .server import WAIT_S, FakeDiscord, point_discord_at

__all__ = [
    "WAIT_S",
    "ApiError",
    "Channel",
    "FakeDiscord",
    "GatewayRecord",
    "Guild",
    "InteractionRecord",
    "MessageVersion",
    "RequestRecord",
    "StoredAttachment",
    "StoredMessage",
    "Upload",
    "UploadedFile",
    "User",
    "point_discord_at",
]

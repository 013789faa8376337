"""Plain data kept by the fake Discord, and the JSON payloads Discord would send for it.

Everything here is synchronous and free of aiohttp; ids are real snowflakes (so discord.py's
``created_at`` works), payloads follow Discord API v10 closely enough for discord.py 2.7.
"""

from __future__ import annotations

import datetime as dt
import io
import mimetypes
import time
from dataclasses import dataclass, field
from typing import Any

DISCORD_EPOCH_MS = 1420070400000
MiB = 1024 * 1024

# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADMINISTRATOR = 1 << 3
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
DEFAULT_PERMISSIONS = (
    ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS
)

# Upload limit per boost tier, as Discord (and discord.py's Guild.filesize_limit) define it.
TIER_UPLOAD_LIMITS = {0: 10 * MiB, 1: 10 * MiB, 2: 50 * MiB, 3: 100 * MiB}

# Message flags.
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7

# Message types.
MSG_DEFAULT = 0
MSG_REPLY = 19
MSG_CHAT_INPUT_COMMAND = 20
MSG_CONTEXT_MENU_COMMAND = 23


class ApiError(Exception):
    """An error answer of the REST API: HTTP status plus Discord's JSON error code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class Snowflakes:
    """Strictly increasing snowflake ids based on the current time."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(candidate, self._last + 1)
        return self._last


def snowflake_time(snowflake: int) -> str:
    ms = (snowflake >> 22) + DISCORD_EPOCH_MS
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass
class User:
    id: int
    name: str
    bot: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": None if self.bot else self.name.title(),
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
            "verified": True,
            "mfa_enabled": False,
        }


@dataclass
class Channel:
    id: int
    guild_id: int
    name: str
    type: int = 0  # GUILD_TEXT
    position: int = 0
    nsfw: bool = False  # age-restricted

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "parent_id": None,
            "topic": None,
            "nsfw": self.nsfw,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "flags": 0,
        }


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    channels: list[Channel] = field(default_factory=list)
    member_ids: list[int] = field(default_factory=list)
    premium_tier: int = 0
    upload_limit: int | None = None
    """Overrides the tier's upload limit: sent as the interactions' ``attachment_size_limit`` and
    enforced on uploads. discord.py's ``Guild.filesize_limit`` only knows the tier limits."""
    everyone_permissions: int = DEFAULT_PERMISSIONS
    member_permissions: dict[int, int] = field(default_factory=dict)
    """A member's permissions in interactions (``member.permissions``), by user id; the others have
    ``everyone_permissions``."""
    bot_is_member: bool = True
    joined_at: str = field(default_factory=now_iso)

    @property
    def filesize_limit(self) -> int:
        if self.upload_limit is not None:
            return self.upload_limit
        return TIER_UPLOAD_LIMITS[self.premium_tier]

    @property
    def channel(self) -> Channel:
        """The first text channel."""
        return next(c for c in self.channels if c.type == 0)

    def permissions_of(self, user_id: int) -> int:
        """What an interaction of ``user_id`` says the member may do here."""
        return self.member_permissions.get(user_id, self.everyone_permissions)

    def has_permission(self, bit: int) -> bool:
        perms = self.everyone_permissions
        return bool(perms & ADMINISTRATOR or perms & bit == bit)

    def role_payloads(self) -> list[dict[str, Any]]:
        return [
            {
                "id": str(self.id),  # @everyone has the guild's id
                "name": "@everyone",
                "permissions": str(self.everyone_permissions),
                "position": 0,
                "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "flags": 0,
                "icon": None,
                "unicode_emoji": None,
            }
        ]

    def member_payload(self, user: User, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [],
            "joined_at": self.joined_at,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "pending": False,
            "premium_since": None,
            "avatar": None,
        }
        if with_user:
            data["user"] = user.payload()
        return data

    def payload(self, users: dict[int, User]) -> dict[str, Any]:
        """The full guild object of a GUILD_CREATE."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": [0, 2, 7, 14][self.premium_tier],
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": str(self.channel.id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "features": [],
            "roles": self.role_payloads(),
            "emojis": [],
            "stickers": [],
            "joined_at": self.joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(self.member_ids),
            "members": [self.member_payload(users[uid]) for uid in self.member_ids],
            "channels": [c.payload() for c in self.channels],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


@dataclass(frozen=True)
class Upload:
    """An attachment a fake user uploads (to a slash command option or a message).

    ``size`` is what Discord reports and may lie (to test size checks made before downloading);
    ``data`` is what the CDN serves and may be anything (not an image, truncated).
    ``cdn_status`` other than 200 makes the CDN answer that status instead; ``cdn_fault`` makes
    it misbehave: ``"hang"`` (no answer until ``fake.release_downloads()``) or ``"drop"`` (half the
    body, then the connection is closed).
    """

    filename: str
    data: bytes
    content_type: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    cdn_status: int = 200
    cdn_fault: str | None = None

    @classmethod
    def of(cls, value: Upload | tuple[Any, ...]) -> Upload:
        """Accept an Upload or a ``(filename, data[, content_type])`` tuple."""
        return value if isinstance(value, Upload) else cls(*value)


@dataclass
class StoredAttachment:
    id: int
    filename: str
    data: bytes
    content_type: str | None
    size: int
    url: str
    proxy_url: str
    width: int | None = None
    height: int | None = None
    description: str | None = None
    cdn_status: int = 200
    cdn_fault: str | None = None
    ephemeral: bool = False

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.proxy_url,
            "content_type": self.content_type,
            "ephemeral": self.ephemeral,
        }
        if self.width is not None and self.height is not None:
            data["width"] = self.width
            data["height"] = self.height
        if self.description is not None:
            data["description"] = self.description
        return data


def guess_content_type(filename: str) -> str | None:
    return mimetypes.guess_type(filename)[0]


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height when ``data`` starts like an image Pillow knows, else None."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None


@dataclass(frozen=True)
class MessageVersion:
    """A message as it looked after its creation or after one edit."""

    content: str
    attachments: tuple[StoredAttachment, ...]
    embeds: tuple[dict[str, Any], ...]
    components: tuple[dict[str, Any], ...]
    flags: int

    @property
    def files(self) -> tuple[StoredAttachment, ...]:
        return self.attachments


def walk_components(components: Any) -> list[dict[str, Any]]:
    """All components, nested ones included, depth first."""
    found: list[dict[str, Any]] = []
    for component in components or ():
        found.append(component)
        found.extend(walk_components(component.get("components")))
        if "component" in component:  # a Label (type 18) holds one component
            found.extend(walk_components([component["component"]]))
        if "accessory" in component:
            found.extend(walk_components([component["accessory"]]))
    return found


@dataclass
class StoredMessage:
    id: int
    channel_id: int
    guild_id: int | None
    author: User
    content: str = ""
    attachments: list[StoredAttachment] = field(default_factory=list)
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    type: int = MSG_DEFAULT
    mention_ids: list[int] = field(default_factory=list)
    reference: dict[str, Any] | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    created_at: str = field(default_factory=now_iso)
    edited_at: str | None = None
    deleted: bool = False
    versions: list[MessageVersion] = field(default_factory=list)
    reactions: list[tuple[str, int]] = field(default_factory=list)

    def snapshot(self) -> None:
        self.versions.append(
            MessageVersion(
                content=self.content,
                attachments=tuple(self.attachments),
                embeds=tuple(self.embeds),
                components=tuple(self.components),
                flags=self.flags,
            )
        )

    @property
    def files(self) -> list[StoredAttachment]:
        return self.attachments

    @property
    def edits(self) -> list[MessageVersion]:
        return self.versions[1:]

    @property
    def reference_id(self) -> int | None:
        if self.reference is None or self.reference.get("message_id") is None:
            return None
        return int(self.reference["message_id"])

    @property
    def is_loading(self) -> bool:
        return bool(self.flags & FLAG_LOADING)

    @property
    def is_ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [c for c in walk_components(self.components) if c.get("type") == 2]

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in walk_components(self.components) if "custom_id" in c]

    def component(self, custom_id: str) -> dict[str, Any] | None:
        return next((c for c in walk_components(self.components) if c.get("custom_id") == custom_id), None)


@dataclass
class InteractionRecord:
    """An interaction the fake dispatched, and what the bot answered to it."""

    id: int
    token: str
    type: int
    user: User
    guild_id: int | None
    channel_id: int
    payload: dict[str, Any]
    source_message_id: int | None = None
    response_type: int | None = None
    response_data: dict[str, Any] | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    expired_status: int | None = None
    dispatched_at: float = field(default_factory=time.monotonic)
    acknowledged_at: float | None = None  # time.monotonic() when the bot's callback arrived

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def ack_s(self) -> float | None:
        """Seconds from the dispatch to the bot's answer (Discord allows 3)."""
        return None if self.acknowledged_at is None else self.acknowledged_at - self.dispatched_at

    @property
    def name(self) -> str | None:
        return self.payload.get("data", {}).get("name")

    @property
    def custom_id(self) -> str | None:
        return self.payload.get("data", {}).get("custom_id")


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request."""

    field: str
    filename: str
    content_type: str | None
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class RequestRecord:
    """One HTTP request the fake received (REST or CDN), with its answer."""

    method: str
    path: str
    route: str
    params: dict[str, str]
    query: dict[str, str]
    json: Any = None
    files: list[UploadedFile] = field(default_factory=list)
    status: int = 0
    response: Any = None

    def __repr__(self) -> str:
        files = f" files={[f.filename for f in self.files]}" if self.files else ""
        return f"<{self.method} {self.path} -> {self.status}{files}>"

    def matches(self, method: str | None = None, route: str | None = None) -> bool:
        """Method equal (if given) and ``route`` a substring of the route pattern or the path."""
        if method is not None and self.method != method.upper():
            return False
        return route is None or route in self.route or route in self.path


@dataclass
class GatewayRecord:
    """One gateway payload, sent (``"send"``) or received (``"recv"``) by the fake."""

    direction: str
    session_id: str | None
    op: int
    t: str | None = None
    s: int | None = None
    d: Any = None

"""The fake's world: users, guilds, channels, messages, interactions, commands and the logs.

The REST and gateway layers both read and change this state; tests inspect it.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from .models import (
    ATTACH_FILES,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    MSG_DEFAULT,
    MSG_REPLY,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    ApiError,
    Channel,
    GatewayRecord,
    Guild,
    InteractionRecord,
    RequestRecord,
    Snowflakes,
    StoredAttachment,
    StoredMessage,
    Upload,
    UploadedFile,
    User,
    guess_content_type,
    image_size,
    now_iso,
)

MAX_CONTENT = 2000
MAX_ATTACHMENTS = 10

# Privileged gateway intents and the application flags that allow them.
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
APP_FLAG_PRESENCE = 1 << 12
APP_FLAG_MEMBERS = 1 << 14
APP_FLAG_MESSAGE_CONTENT = 1 << 18


class Notifier:
    """Wakes every waiter on each change; waiters re-check their condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class FakeState:
    def __init__(
        self,
        *,
        token: str,
        base_url: str,
        message_content_allowed: bool = True,
        members_allowed: bool = True,
        presences_allowed: bool = True,
    ) -> None:
        self.ids = Snowflakes()
        self.token = token
        self.base_url = base_url  # http://127.0.0.1:PORT, set once the server listens
        self.app_id = self.ids.next()
        self.bot_user = User(self.app_id, "OutpaintBot", bot=True)
        self.users: dict[int, User] = {self.bot_user.id: self.bot_user}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, StoredMessage] = {}
        self.attachments: dict[int, StoredAttachment] = {}
        self.interactions: dict[int, InteractionRecord] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {None: []}
        self.requests: list[RequestRecord] = []
        self.gateway_log: list[GatewayRecord] = []
        self.internal_errors: list[str] = []  # bugs of the fake itself, raised when it stops
        self.message_content_allowed = message_content_allowed
        self.members_allowed = members_allowed
        self.presences_allowed = presences_allowed
        self.notifier = Notifier()
        self.downloads_released = asyncio.Event()  # lets the CDN answer "hang" downloads
        self.held_downloads = 0  # downloads the CDN is holding right now

    # -- the world -------------------------------------------------------------------------

    def add_user(self, name: str, *, bot: bool = False) -> User:
        user = User(self.ids.next(), name, bot=bot)
        self.users[user.id] = user
        for guild in self.guilds.values():
            guild.member_ids.append(user.id)
        return user

    def add_guild(
        self,
        name: str,
        *,
        owner: User,
        channels: tuple[str, ...] = ("general",),
        premium_tier: int = 0,
        upload_limit: int | None = None,
    ) -> Guild:
        guild = Guild(
            id=self.ids.next(),
            name=name,
            owner_id=owner.id,
            member_ids=list(self.users),
            premium_tier=premium_tier,
            upload_limit=upload_limit,
        )
        for position, channel_name in enumerate(channels):
            self.add_channel(guild, channel_name, position=position)
        self.guilds[guild.id] = guild
        return guild

    def add_channel(self, guild: Guild, name: str, *, position: int | None = None) -> Channel:
        channel = Channel(
            self.ids.next(), guild.id, name, position=len(guild.channels) if position is None else position
        )
        guild.channels.append(channel)
        self.channels[channel.id] = channel
        return channel

    def user(self, ref: User | str | int) -> User:
        if isinstance(ref, User):
            return ref
        for user in self.users.values():
            if ref in (user.id, user.name):
                return user
        raise KeyError(f"no fake user {ref!r}")

    def channel(self, ref: Channel | int) -> Channel:
        channel_id = ref.id if isinstance(ref, Channel) else int(ref)
        try:
            return self.channels[channel_id]
        except KeyError:
            raise ApiError(404, 10003, "Unknown Channel") from None

    def message(self, channel_id: int | None, message_id: int) -> StoredMessage:
        msg = self.messages.get(message_id)
        if msg is None or msg.deleted or (channel_id is not None and msg.channel_id != channel_id):
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    def guild_of(self, channel: Channel) -> Guild:
        return self.guilds[channel.guild_id]

    def application_flags(self) -> int:
        flags = 1 << 23  # APPLICATION_COMMAND_BADGE
        if self.message_content_allowed:
            flags |= APP_FLAG_MESSAGE_CONTENT
        if self.members_allowed:
            flags |= APP_FLAG_MEMBERS
        if self.presences_allowed:
            flags |= APP_FLAG_PRESENCE
        return flags

    def disallowed_intents(self, intents: int) -> int:
        allowed = {
            INTENT_GUILD_MEMBERS: self.members_allowed,
            INTENT_GUILD_PRESENCES: self.presences_allowed,
            INTENT_MESSAGE_CONTENT: self.message_content_allowed,
        }
        return sum(bit for bit, ok in allowed.items() if intents & bit and not ok)

    def application_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.app_id),
            "name": self.bot_user.name,
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": next(u for u in self.users.values() if not u.bot).payload(),
            "verify_key": "0" * 64,
            "flags": self.application_flags(),
            "team": None,
            "bot": self.bot_user.payload(),
        }

    # -- logs ------------------------------------------------------------------------------

    def log_request(self, record: RequestRecord) -> None:
        self.requests.append(record)
        self.notifier.notify()

    def log_gateway(self, record: GatewayRecord) -> None:
        self.gateway_log.append(record)
        self.notifier.notify()

    # -- attachments -----------------------------------------------------------------------

    def store_upload(self, upload: Upload, *, parent_id: int, kind: str = "attachments") -> StoredAttachment:
        att_id = self.ids.next()
        size = image_size(upload.data)
        path = f"{kind}/{parent_id}/{att_id}/{upload.filename}"
        attachment = StoredAttachment(
            id=att_id,
            filename=upload.filename,
            data=upload.data,
            content_type=upload.content_type or guess_content_type(upload.filename),
            size=len(upload.data) if upload.size is None else upload.size,
            url=f"{self.base_url}/cdn/{path}",
            proxy_url=f"{self.base_url}/media/{path}",
            width=upload.width if upload.width is not None else (size[0] if size else None),
            height=upload.height if upload.height is not None else (size[1] if size else None),
            cdn_status=upload.cdn_status,
            cdn_fault=upload.cdn_fault,
            ephemeral=kind == "ephemeral-attachments",
        )
        self.attachments[att_id] = attachment
        return attachment

    def _resolve_attachments(
        self,
        spec: list[dict[str, Any]] | None,
        files: list[UploadedFile],
        current: list[StoredAttachment],
        channel_id: int,
    ) -> list[StoredAttachment]:
        """The attachment list after a create or edit, as Discord computes it.

        With an ``attachments`` array, it is the complete new list: entries whose id is a
        ``files[N]`` index are new uploads, other ids keep existing attachments. Without one,
        uploads are appended to the current attachments.
        """
        uploads = {_file_index(f): f for f in files}

        def store(f: UploadedFile, description: str | None = None) -> StoredAttachment:
            stored = self.store_upload(Upload(f.filename, f.data), parent_id=channel_id)
            stored.description = description
            return stored

        if spec is None:
            return [*current, *(store(f) for f in files)]
        result = []
        for entry in spec:
            key = str(entry.get("id"))
            if key in uploads:
                upload = uploads.pop(key)
                if entry.get("filename"):
                    upload = UploadedFile(upload.field, entry["filename"], upload.content_type, upload.data)
                result.append(store(upload, entry.get("description")))
            else:
                kept = next((a for a in current if str(a.id) == key), None)
                if kept is None:
                    raise ApiError(400, 50035, f"Invalid Form Body: unknown attachment id {key}")
                result.append(kept)
        return result

    # -- messages --------------------------------------------------------------------------

    def create_message(
        self,
        channel: Channel,
        author: User,
        payload: dict[str, Any],
        files: list[UploadedFile] | None = None,
        *,
        uploads: list[Upload] | None = None,
        msg_type: int | None = None,
        mention_ids: list[int] | None = None,
        webhook_id: int | None = None,
        interaction: InteractionRecord | None = None,
        check_limits: bool = True,
    ) -> StoredMessage:
        """Store a new message. ``files`` are the bot's multipart uploads; ``uploads`` are
        attachments a fake user posts (stored as given, limits not checked)."""
        guild = self.guild_of(channel)
        files = files or []
        if uploads is not None:
            attachments = [self.store_upload(u, parent_id=channel.id) for u in uploads]
        else:
            attachments = self._resolve_attachments(payload.get("attachments"), files, [], channel.id)
        msg = StoredMessage(
            id=self.ids.next(),
            channel_id=channel.id,
            guild_id=guild.id,
            author=author,
            content=payload.get("content") or "",
            attachments=attachments,
            embeds=list(payload.get("embeds") or []),
            components=list(payload.get("components") or []),
            flags=int(payload.get("flags") or 0),
            mention_ids=list(mention_ids or []),
            webhook_id=webhook_id,
        )
        reference = payload.get("message_reference")
        if reference:
            ref_id = int(reference["message_id"])
            target = self.messages.get(ref_id)
            if target is None or target.deleted:
                if reference.get("fail_if_not_exists", True):
                    raise ApiError(400, 50035, "Invalid Form Body: Unknown message (message_reference)")
            else:
                msg.reference = {
                    "type": 0,
                    "message_id": str(ref_id),
                    "channel_id": str(target.channel_id),
                    "guild_id": str(target.guild_id),
                }
                replied = payload.get("allowed_mentions", {}).get("replied_user", True)
                if replied and target.author.id not in msg.mention_ids:
                    msg.mention_ids.append(target.author.id)
        msg.type = msg_type if msg_type is not None else (MSG_REPLY if msg.reference else MSG_DEFAULT)
        if interaction is not None:
            msg.application_id = self.app_id
            msg.interaction_id = interaction.id
            msg.interaction_metadata = {
                "id": str(interaction.id),
                "type": interaction.type,
                "user": interaction.user.payload(),
                "authorizing_integration_owners": {"0": str(interaction.guild_id)},
                "name": interaction.name,
            }
        if check_limits:
            self._check_message(msg, guild, files)
        msg.snapshot()
        self.messages[msg.id] = msg
        return msg

    def edit_message(
        self, msg: StoredMessage, payload: dict[str, Any], files: list[UploadedFile] | None = None
    ) -> StoredMessage:
        files = files or []
        previous = (msg.content, msg.attachments, msg.embeds, msg.components, msg.flags)
        if "content" in payload:
            msg.content = payload["content"] or ""
        if "embeds" in payload:
            msg.embeds = list(payload["embeds"] or [])
        if "components" in payload:
            msg.components = list(payload["components"] or [])
        if payload.get("flags") is not None:
            # Only SUPPRESS_EMBEDS (and components v2) can change; ephemeral stays as it was.
            msg.flags = (msg.flags & FLAG_EPHEMERAL) | (
                int(payload["flags"]) & ~(FLAG_EPHEMERAL | FLAG_LOADING)
            )
        msg.flags &= ~FLAG_LOADING  # an edit ends a deferred "thinking" state
        msg.attachments = self._resolve_attachments(
            payload.get("attachments"), files, msg.attachments, msg.channel_id
        )
        try:
            self._check_message(msg, self.guilds[msg.guild_id], files)  # type: ignore[index]
        except ApiError:
            msg.content, msg.attachments, msg.embeds, msg.components, msg.flags = previous
            raise
        msg.edited_at = now_iso()
        msg.snapshot()
        return msg

    def delete_message(self, msg: StoredMessage) -> None:
        msg.deleted = True

    def _check_message(self, msg: StoredMessage, guild: Guild, files: list[UploadedFile]) -> None:
        if len(msg.content) > MAX_CONTENT:
            raise ApiError(400, 50035, f"Invalid Form Body: content must be {MAX_CONTENT} or fewer in length")
        if len(msg.attachments) > MAX_ATTACHMENTS:
            raise ApiError(400, 50035, f"Invalid Form Body: at most {MAX_ATTACHMENTS} attachments")
        if not (msg.content or msg.attachments or msg.embeds or msg.components or msg.is_loading):
            raise ApiError(400, 50006, "Cannot send an empty message")
        if any(f.size > guild.filesize_limit for f in files):
            raise ApiError(413, 40005, "Request entity too large")

    def check_can_send(self, channel: Channel, *, with_files: bool, reply: bool) -> None:
        guild = self.guild_of(channel)
        needed = [VIEW_CHANNEL, SEND_MESSAGES]
        if with_files:
            needed.append(ATTACH_FILES)
        if reply:
            needed.append(READ_MESSAGE_HISTORY)
        if not all(guild.has_permission(bit) for bit in needed):
            raise ApiError(403, 50013, "Missing Permissions")

    def bot_sees_content(self, msg: StoredMessage, *, has_intent: bool) -> bool:
        """Whether message-content fields reach the bot (Discord's privileged-intent rule)."""
        return has_intent or msg.author.id == self.bot_user.id or self.bot_user.id in msg.mention_ids

    def message_payload(
        self, msg: StoredMessage, *, content_intent: bool = True, gateway: bool = False, nested: bool = False
    ) -> dict[str, Any]:
        visible = self.bot_sees_content(msg, has_intent=content_intent)
        guild = self.guilds.get(msg.guild_id) if msg.guild_id else None
        data: dict[str, Any] = {
            "id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "author": msg.author.payload(),
            "content": msg.content if visible else "",
            "timestamp": msg.created_at,
            "edited_timestamp": msg.edited_at,
            "tts": False,
            "mention_everyone": False,
            "mentions": [self._mention_payload(uid, guild) for uid in msg.mention_ids],
            "mention_roles": [],
            "attachments": [a.payload() for a in msg.attachments] if visible else [],
            "embeds": list(msg.embeds) if visible else [],
            "components": list(msg.components) if visible else [],
            "pinned": False,
            "type": msg.type,
            "flags": msg.flags,
        }
        if msg.guild_id is not None:
            data["guild_id"] = str(msg.guild_id)
        if gateway and guild is not None and msg.webhook_id is None:
            data["member"] = guild.member_payload(msg.author, with_user=False)
        if msg.webhook_id is not None:
            data["webhook_id"] = str(msg.webhook_id)
        if msg.application_id is not None:
            data["application_id"] = str(msg.application_id)
        if msg.interaction_metadata is not None:
            data["interaction_metadata"] = msg.interaction_metadata
        if msg.reference is not None:
            data["message_reference"] = msg.reference
            if not nested:
                target = self.messages.get(msg.reference_id or 0)
                data["referenced_message"] = (
                    None
                    if target is None or target.deleted
                    else self.message_payload(target, content_intent=content_intent, nested=True)
                )
        return data

    def _mention_payload(self, user_id: int, guild: Guild | None) -> dict[str, Any]:
        user = self.users[user_id]
        data = user.payload()
        if guild is not None and user_id in guild.member_ids:
            data["member"] = guild.member_payload(user, with_user=False)
        return data

    # -- interactions ----------------------------------------------------------------------

    def new_interaction(
        self,
        *,
        type: int,
        user: User,
        channel: Channel,
        data: dict[str, Any],
        message: StoredMessage | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        guild = self.guild_of(channel)
        interaction_id = self.ids.next()
        token = f"fake-itoken-{interaction_id}-{secrets.token_hex(8)}"
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.app_id),
            "type": type,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "member": {
                **guild.member_payload(user),
                "permissions": str(guild.permissions_of(user.id)),
            },
            "token": token,
            "version": 1,
            "app_permissions": str(guild.everyone_permissions),
            "locale": locale,
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": guild.filesize_limit,
        }
        if message is not None:
            payload["message"] = self.message_payload(message)
        record = InteractionRecord(
            id=interaction_id,
            token=token,
            type=type,
            user=user,
            guild_id=guild.id,
            channel_id=channel.id,
            payload=payload,
            source_message_id=message.id if message else None,
        )
        self.interactions[interaction_id] = record
        return record

    def interaction_by_token(self, app_id: int, token: str) -> InteractionRecord:
        record = next((i for i in self.interactions.values() if i.token == token), None)
        if record is None or app_id != self.app_id:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if record.expired_status is not None:
            if record.expired_status == 404:
                raise ApiError(404, 10015, "Unknown Webhook")
            raise ApiError(record.expired_status, 50027, "Invalid Webhook Token")
        return record

    # -- application commands --------------------------------------------------------------

    def put_commands(self, guild_id: int | None, payload: list[dict[str, Any]]) -> list[dict[str, Any]]:
        old = {(c["name"], c.get("type", 1)): c for c in self.commands.get(guild_id, [])}
        stored = []
        for command in payload:
            key = (command["name"], command.get("type", 1))
            stored.append(self._command(guild_id, command, old.get(key)))
        self.commands[guild_id] = stored
        return stored

    def upsert_command(self, guild_id: int | None, command: dict[str, Any]) -> dict[str, Any]:
        current = self.commands.setdefault(guild_id, [])
        key = (command["name"], command.get("type", 1))
        old = next((c for c in current if (c["name"], c.get("type", 1)) == key), None)
        new = self._command(guild_id, command, old)
        self.commands[guild_id] = [c for c in current if c is not old] + [new]
        return new

    def _command(
        self, guild_id: int | None, command: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        data = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            **command,
            "id": old["id"] if old else str(self.ids.next()),
            "application_id": str(self.app_id),
            "version": str(self.ids.next()),
        }
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        return data

    def find_command(self, name: str, guild_id: int | None, type: int) -> dict[str, Any] | None:
        for scope in (guild_id, None):
            for command in self.commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == type:
                    return command
        return None


def _file_index(f: UploadedFile) -> str:
    """``files[3]`` -> ``"3"`` (the id an attachments entry uses for a new upload)."""
    name = f.field
    if name.startswith("files[") and name.endswith("]"):
        return name[6:-1]
    return name.removeprefix("file")

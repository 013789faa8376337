"""The REST routes discord.py uses for a bot like ours, plus the attachment CDN.

Every request is parsed (JSON or multipart with ``payload_json`` and ``files[N]``), answered,
and recorded in ``state.requests``. Answers carry ``X-RateLimit-*`` headers; a switch makes the
next matching requests answer 429 once.
"""

from __future__ import annotations

import inspect
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .gateway import Gateway
from .models import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    MSG_CHAT_INPUT_COMMAND,
    MSG_CONTEXT_MENU_COMMAND,
    MSG_DEFAULT,
    READ_MESSAGE_HISTORY,
    ApiError,
    Guild,
    InteractionRecord,
    RequestRecord,
    StoredMessage,
    UploadedFile,
)
from .state import INTENT_GUILD_MESSAGES, FakeState

API = "/api/v{version:\\d+}"
Handler = Callable[[web.Request, RequestRecord], Awaitable[Any]]

# Interaction callback types.
CB_PONG = 1
CB_MESSAGE = 4
CB_DEFERRED_MESSAGE = 5
CB_DEFERRED_UPDATE = 6
CB_UPDATE_MESSAGE = 7
CB_AUTOCOMPLETE = 8
CB_MODAL = 9

NO_CONTENT = object()


@dataclass
class RateLimitRule:
    remaining: int
    retry_after: float
    route: str | None
    is_global: bool


@dataclass
class RequestHook:
    """Runs once, after the next matching request was handled and before it is answered."""

    method: str
    route: str
    callback: Callable[[RequestRecord], Any]


class RestApi:
    def __init__(self, state: FakeState, gateway: Gateway) -> None:
        self.state = state
        self.gateway = gateway
        self.rate_limits: list[RateLimitRule] = []
        self.hooks: list[RequestHook] = []

    # -- plumbing --------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/gateway", self.get_gateway),
            ("GET", "/gateway/bot", self.get_gateway),
            ("GET", "/users/@me", self.get_me),
            ("DELETE", "/users/@me/guilds/{guild_id}", self.leave_guild),
            ("GET", "/users/{user_id}", self.get_user),
            ("GET", "/oauth2/applications/@me", self.get_application),
            ("GET", "/applications/@me", self.get_application),
            ("GET", "/applications/{app_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/commands", self.put_commands),
            ("POST", "/applications/{app_id}/commands", self.post_command),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self.put_commands),
            ("POST", "/applications/{app_id}/guilds/{guild_id}/commands", self.post_command),
            ("GET", "/guilds/{guild_id}", self.get_guild),
            ("GET", "/guilds/{guild_id}/channels", self.get_guild_channels),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member),
            ("GET", "/channels/{channel_id}", self.get_channel),
            ("GET", "/channels/{channel_id}/messages", self.get_messages),
            ("POST", "/channels/{channel_id}/messages", self.post_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self.patch_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message),
            ("POST", "/channels/{channel_id}/typing", self.typing),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self.add_reaction),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self.remove_reaction,
            ),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self.interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self.post_followup),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self.get_webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self.patch_webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self.delete_webhook_message),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, API + path, self._wrap(path, handler, api=True))
        for prefix in ("/cdn", "/media"):
            cdn_path = prefix + "/{kind}/{parent_id}/{attachment_id}/{filename}"
            app.router.add_route("GET", cdn_path, self._wrap(cdn_path, self.cdn, api=False))
        app.router.add_route("*", "/{tail:.*}", self._wrap("<unknown>", self.unknown, api=False))

    def _wrap(
        self, route: str, handler: Handler, *, api: bool
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        webhook_route = route.startswith(("/webhooks/", "/interactions/"))

        async def wrapped(request: web.Request) -> web.StreamResponse:
            params = {k: v for k, v in request.match_info.items() if k != "version"}
            record = RequestRecord(
                method=request.method,
                path=_api_path(request.path),
                route=f"{request.method} {route}",
                params=params,
                query=dict(request.query),
            )
            try:
                record.json, record.files = await _parse_body(request)
                if (
                    api
                    and not webhook_route
                    and request.headers.get("Authorization") != f"Bot {self.state.token}"
                ):
                    raise ApiError(401, 0, "401: Unauthorized")
                limited = self._rate_limited(record) if api else None
                if limited is not None:
                    response = limited
                else:
                    result = await handler(request, record)
                    await self._run_hook(record)
                    response = self._respond(record, 200, result)
            except ApiError as error:
                response = self._respond(record, error.status, error.body())
            except Exception as error:  # a bug in the fake: fail the request fast and loudly
                self.state.internal_errors.append(f"{record.method} {record.path}: {error!r}")
                # 400, not 500: discord.py retries 5xx answers with sleeps.
                response = self._respond(record, 400, {"code": 0, "message": f"fake Discord bug: {error!r}"})
            if api:
                _add_rate_limit_headers(response, route)
            self.state.log_request(record)
            return response

        return wrapped

    @staticmethod
    def _respond(record: RequestRecord, status: int, body: Any) -> web.StreamResponse:
        if isinstance(body, web.StreamResponse):
            record.status = body.status
            return body
        if body is NO_CONTENT:
            record.status = 204
            return web.Response(status=204)
        record.status, record.response = status, body
        return _json(body, status)

    async def _run_hook(self, record: RequestRecord) -> None:
        hook = next((h for h in self.hooks if record.matches(h.method, h.route)), None)
        if hook is not None:
            self.hooks.remove(hook)
            if inspect.isawaitable(outcome := hook.callback(record)):
                await outcome

    def rate_limit_next(self, count: int, retry_after: float, route: str | None, is_global: bool) -> None:
        self.rate_limits.append(RateLimitRule(count, retry_after, route, is_global))

    def _rate_limited(self, record: RequestRecord) -> web.Response | None:
        for rule in self.rate_limits:
            if rule.remaining > 0 and (rule.route is None or record.matches(route=rule.route)):
                rule.remaining -= 1
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": rule.retry_after,
                    "global": rule.is_global,
                }
                record.status, record.response = 429, body
                headers = {
                    "Via": "1.1 google",
                    "Retry-After": str(max(1, round(rule.retry_after))),
                    "X-RateLimit-Scope": "global" if rule.is_global else "user",
                }
                if not rule.is_global:
                    headers |= {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0"}
                    headers["X-RateLimit-Reset-After"] = str(rule.retry_after)
                    headers["X-RateLimit-Reset"] = str(time.time() + rule.retry_after)
                if rule.is_global:
                    headers["X-RateLimit-Global"] = "true"
                response = _json(body, 429)
                response.headers.update(headers)
                return response
        return None

    async def _message_created(self, msg: StoredMessage) -> None:
        if not msg.is_ephemeral:
            await self.gateway.dispatch_message(
                "MESSAGE_CREATE",
                lambda intent: self.state.message_payload(msg, content_intent=intent, gateway=True),
            )

    async def _message_updated(self, msg: StoredMessage) -> None:
        if not msg.is_ephemeral:
            await self.gateway.dispatch_message(
                "MESSAGE_UPDATE",
                lambda intent: self.state.message_payload(msg, content_intent=intent, gateway=True),
            )

    async def _message_deleted(self, msg: StoredMessage) -> None:
        if not msg.is_ephemeral:
            data = {"id": str(msg.id), "channel_id": str(msg.channel_id), "guild_id": str(msg.guild_id)}
            await self.gateway.dispatch("MESSAGE_DELETE", data, intent=INTENT_GUILD_MESSAGES)

    def _rest_view(self, msg: StoredMessage) -> dict[str, Any]:
        """A message as the REST API shows it to the bot (content needs the portal's intent flag)."""
        return self.state.message_payload(msg, content_intent=self.state.message_content_allowed)

    # -- gateway, users, application, guilds -----------------------------------------------

    async def get_gateway(self, request: web.Request, record: RequestRecord) -> Any:
        url = self.state.base_url.replace("http://", "ws://")
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return {"url": url, "shards": 1, "session_start_limit": limit}

    async def get_me(self, request: web.Request, record: RequestRecord) -> Any:
        return self.state.bot_user.payload()

    async def get_user(self, request: web.Request, record: RequestRecord) -> Any:
        user = self.state.users.get(int(record.params["user_id"]))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return user.payload()

    async def get_application(self, request: web.Request, record: RequestRecord) -> Any:
        return self.state.application_payload()

    async def leave_guild(self, request: web.Request, record: RequestRecord) -> Any:
        guild = self._guild(record)
        guild.bot_is_member = False
        await self.gateway.dispatch("GUILD_DELETE", {"id": str(guild.id)})
        return NO_CONTENT

    def _guild(self, record: RequestRecord) -> Guild:
        guild = self.state.guilds.get(int(record.params["guild_id"]))
        if guild is None or not guild.bot_is_member:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    async def get_guild(self, request: web.Request, record: RequestRecord) -> Any:
        data = self._guild(record).payload(self.state.users)
        for key in ("members", "channels", "threads", "presences", "voice_states"):
            data.pop(key)
        return data

    async def get_guild_channels(self, request: web.Request, record: RequestRecord) -> Any:
        return [c.payload() for c in self._guild(record).channels]

    async def get_member(self, request: web.Request, record: RequestRecord) -> Any:
        guild = self._guild(record)
        user_id = int(record.params["user_id"])
        if user_id not in guild.member_ids:
            raise ApiError(404, 10007, "Unknown Member")
        return guild.member_payload(self.state.users[user_id])

    # -- application commands --------------------------------------------------------------

    def _command_scope(self, record: RequestRecord) -> int | None:
        if int(record.params["app_id"]) != self.state.app_id:
            raise ApiError(403, 50001, "Missing Access")
        return self._guild(record).id if "guild_id" in record.params else None

    async def get_commands(self, request: web.Request, record: RequestRecord) -> Any:
        return self.state.commands.get(self._command_scope(record), [])

    async def put_commands(self, request: web.Request, record: RequestRecord) -> Any:
        return self.state.put_commands(self._command_scope(record), record.json or [])

    async def post_command(self, request: web.Request, record: RequestRecord) -> Any:
        return self.state.upsert_command(self._command_scope(record), record.json)

    # -- channels and messages -------------------------------------------------------------

    async def get_channel(self, request: web.Request, record: RequestRecord) -> Any:
        return self.state.channel(int(record.params["channel_id"])).payload()

    async def get_messages(self, request: web.Request, record: RequestRecord) -> Any:
        """Newest first; ``before``: older than that id; ``after``: the ``limit`` messages right
        after that id. Without Read Message History, no messages (as on Discord)."""
        channel = self.state.channel(int(record.params["channel_id"]))
        if not self.state.guild_of(channel).has_permission(READ_MESSAGE_HISTORY):
            return []
        limit = min(int(record.query.get("limit", 50)), 100)
        found = [
            m
            for m in self.state.messages.values()  # in id order: oldest first
            if m.channel_id == channel.id and not m.deleted and not m.is_ephemeral
        ]
        if "before" in record.query:
            found = [m for m in found if m.id < int(record.query["before"])]
        if "after" in record.query:
            found = [m for m in found if m.id > int(record.query["after"])][:limit]
        return [self._rest_view(m) for m in reversed(found)][:limit]

    async def post_message(self, request: web.Request, record: RequestRecord) -> Any:
        channel = self.state.channel(int(record.params["channel_id"]))
        payload = record.json or {}
        self.state.check_can_send(
            channel, with_files=bool(record.files), reply=bool(payload.get("message_reference"))
        )
        msg = self.state.create_message(channel, self.state.bot_user, payload, record.files)
        await self._message_created(msg)
        return self.state.message_payload(msg)

    def _channel_message(self, record: RequestRecord) -> StoredMessage:
        msg = self.state.message(int(record.params["channel_id"]), int(record.params["message_id"]))
        if msg.is_ephemeral:  # ephemeral messages exist only for the interaction webhook
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    async def get_message(self, request: web.Request, record: RequestRecord) -> Any:
        return self._rest_view(self._channel_message(record))

    async def patch_message(self, request: web.Request, record: RequestRecord) -> Any:
        msg = self._channel_message(record)
        if msg.author.id != self.state.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        self.state.edit_message(msg, record.json or {}, record.files)
        await self._message_updated(msg)
        return self.state.message_payload(msg)

    async def delete_message(self, request: web.Request, record: RequestRecord) -> Any:
        msg = self._channel_message(record)
        self.state.delete_message(msg)
        await self._message_deleted(msg)
        return NO_CONTENT

    async def typing(self, request: web.Request, record: RequestRecord) -> Any:
        self.state.channel(int(record.params["channel_id"]))
        return NO_CONTENT

    async def add_reaction(self, request: web.Request, record: RequestRecord) -> Any:
        msg = self._channel_message(record)
        reaction = (record.params["emoji"], self.state.bot_user.id)
        if reaction not in msg.reactions:
            msg.reactions.append(reaction)
        return NO_CONTENT

    async def remove_reaction(self, request: web.Request, record: RequestRecord) -> Any:
        msg = self._channel_message(record)
        reaction = (record.params["emoji"], self.state.bot_user.id)
        if reaction in msg.reactions:
            msg.reactions.remove(reaction)
        return NO_CONTENT

    # -- interactions ----------------------------------------------------------------------

    async def interaction_callback(self, request: web.Request, record: RequestRecord) -> Any:
        interaction = self.state.interactions.get(int(record.params["interaction_id"]))
        if interaction is None or interaction.token != record.params["token"] or interaction.expired_status:
            raise ApiError(404, 10062, "Unknown interaction")
        if interaction.acknowledged:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = record.json or {}
        cb_type, data = int(body.get("type", 0)), body.get("data") or {}
        message = await self._apply_callback(interaction, cb_type, data, record.files)
        interaction.response_type, interaction.response_data = cb_type, data
        interaction.acknowledged_at = time.monotonic()
        if record.query.get("with_response") not in ("1", "true", "True"):
            return NO_CONTENT
        summary: dict[str, Any] = {"id": str(interaction.id), "type": interaction.type}
        result: dict[str, Any] = {"interaction": summary, "resource": {"type": cb_type}}
        if message is not None:
            summary["response_message_id"] = str(message.id)
            summary["response_message_loading"] = message.is_loading
            summary["response_message_ephemeral"] = message.is_ephemeral
            result["resource"]["message"] = self.state.message_payload(message)
        return result

    async def _apply_callback(
        self, interaction: InteractionRecord, cb_type: int, data: dict[str, Any], files: list[UploadedFile]
    ) -> StoredMessage | None:
        channel = self.state.channel(interaction.channel_id)
        if cb_type in (CB_MESSAGE, CB_DEFERRED_MESSAGE):
            payload = dict(data)
            if cb_type == CB_DEFERRED_MESSAGE:
                payload = {"flags": (int(data.get("flags") or 0) & FLAG_EPHEMERAL) | FLAG_LOADING}
            kind = MSG_DEFAULT
            if interaction.type == 2:  # application command: slash (1) or context menu (2, 3)
                menu = interaction.payload["data"].get("type", 1) != 1
                kind = MSG_CONTEXT_MENU_COMMAND if menu else MSG_CHAT_INPUT_COMMAND
            message = self.state.create_message(
                channel,
                self.state.bot_user,
                payload,
                files,
                msg_type=kind,
                webhook_id=self.state.app_id,
                interaction=interaction,
            )
            interaction.original_message_id = message.id
            await self._message_created(message)
            return message
        if cb_type in (CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE):
            if interaction.source_message_id is None:
                raise ApiError(400, 50035, "Invalid Form Body: this interaction has no message to update")
            message = self.state.message(None, interaction.source_message_id)
            interaction.original_message_id = message.id
            if cb_type == CB_UPDATE_MESSAGE:
                self.state.edit_message(message, data, files)
                await self._message_updated(message)
            return message
        if cb_type == CB_MODAL:
            if interaction.type == 5:
                raise ApiError(400, 50035, "Invalid Form Body: a modal cannot answer a modal")
            interaction.modal = data
            return None
        if cb_type == CB_AUTOCOMPLETE:
            return None
        raise ApiError(400, 50035, f"Invalid Form Body: interaction callback type {cb_type}")

    def _webhook_message(self, interaction: InteractionRecord, message_id: str) -> StoredMessage:
        if message_id == "@original":
            if interaction.original_message_id is None:
                raise ApiError(404, 10008, "Unknown Message")
            return self.state.message(None, interaction.original_message_id)
        msg = self.state.message(None, int(message_id))
        if msg.id != interaction.original_message_id and msg.id not in interaction.followup_ids:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    def _interaction(self, record: RequestRecord) -> InteractionRecord:
        return self.state.interaction_by_token(int(record.params["app_id"]), record.params["token"])

    async def post_followup(self, request: web.Request, record: RequestRecord) -> Any:
        interaction = self._interaction(record)
        if not interaction.acknowledged:
            raise ApiError(404, 10015, "Unknown Webhook")
        original = (
            self.state.messages.get(interaction.original_message_id)
            if interaction.original_message_id
            else None
        )
        payload = record.json or {}
        if original is not None and original.is_loading and interaction.response_type == CB_DEFERRED_MESSAGE:
            # Discord: the first followup after a deferred ("thinking") response replaces it.
            self.state.edit_message(original, {**payload, "flags": None}, record.files)
            await self._message_updated(original)
            msg = original
        else:
            channel = self.state.channel(interaction.channel_id)
            msg = self.state.create_message(
                channel,
                self.state.bot_user,
                payload,
                record.files,
                webhook_id=self.state.app_id,
                interaction=interaction,
            )
            interaction.followup_ids.append(msg.id)
            await self._message_created(msg)
        if record.query.get("wait") in ("1", "true", "True"):
            return self.state.message_payload(msg)
        return NO_CONTENT

    async def get_webhook_message(self, request: web.Request, record: RequestRecord) -> Any:
        interaction = self._interaction(record)
        return self.state.message_payload(self._webhook_message(interaction, record.params["message_id"]))

    async def patch_webhook_message(self, request: web.Request, record: RequestRecord) -> Any:
        interaction = self._interaction(record)
        msg = self._webhook_message(interaction, record.params["message_id"])
        self.state.edit_message(msg, record.json or {}, record.files)
        await self._message_updated(msg)
        return self.state.message_payload(msg)

    async def delete_webhook_message(self, request: web.Request, record: RequestRecord) -> Any:
        interaction = self._interaction(record)
        msg = self._webhook_message(interaction, record.params["message_id"])
        self.state.delete_message(msg)
        await self._message_deleted(msg)
        return NO_CONTENT

    # -- CDN and the rest ------------------------------------------------------------------

    async def cdn(self, request: web.Request, record: RequestRecord) -> Any:
        attachment = self.state.attachments.get(int(record.params["attachment_id"]))
        if attachment is None or attachment.filename != record.params["filename"]:
            return web.Response(status=404, text="Not Found")
        if attachment.cdn_status != 200:
            return web.Response(status=attachment.cdn_status, text="CDN error")
        content_type = attachment.content_type or "application/octet-stream"
        if attachment.cdn_fault == "hang":
            self.state.held_downloads += 1
            self.state.notifier.notify()
            try:
                await self.state.downloads_released.wait()
            finally:
                self.state.held_downloads -= 1
        elif attachment.cdn_fault == "drop":
            response = web.StreamResponse(
                headers={"Content-Type": content_type, "Content-Length": str(len(attachment.data))}
            )
            await response.prepare(request)
            await response.write(attachment.data[: len(attachment.data) // 2])
            assert request.transport is not None
            request.transport.abort()  # the connection drops mid-body
            return response
        return web.Response(body=attachment.data, content_type=content_type)

    async def unknown(self, request: web.Request, record: RequestRecord) -> Any:
        raise ApiError(
            404, 0, f"404: Not Found (the fake Discord has no route {request.method} {request.path})"
        )


async def _parse_body(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    if not request.can_read_body:
        return None, []
    if request.content_type.startswith("multipart/"):
        payload: Any = None
        files: list[UploadedFile] = []
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                payload = json.loads(await part.text())  # type: ignore[union-attr]
            elif part.filename is not None:  # type: ignore[union-attr]
                data = bytes(await part.read())  # type: ignore[union-attr]
                files.append(
                    UploadedFile(part.name or "", part.filename, part.headers.get("Content-Type"), data)
                )  # type: ignore[union-attr]
        return payload, files
    raw = await request.read()
    if not raw:
        return None, []
    try:
        return json.loads(raw), []
    except ValueError:
        raise ApiError(400, 50109, "The request body contains invalid JSON.") from None


def _json(body: Any, status: int) -> web.Response:
    # Exactly "application/json": discord.py parses JSON only for that header value.
    response = web.Response(status=status, body=json.dumps(body).encode())
    response.headers["Content-Type"] = "application/json"
    return response


def _api_path(path: str) -> str:
    """``/api/v10/channels/1`` -> ``/channels/1`` (other paths unchanged)."""
    if path.startswith("/api/v"):
        return "/" + path.split("/", 3)[3] if path.count("/") >= 3 else path
    return path


def _add_rate_limit_headers(response: web.StreamResponse, route: str) -> None:
    if response.status == 429:
        return
    response.headers.update(
        {
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "4",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Bucket": f"fake-{zlib.crc32(route.encode()):08x}",
        }
    )

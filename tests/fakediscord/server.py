"""``FakeDiscord``: the server on loopback plus the API tests drive it with.

async with FakeDiscord() as fake:              # starts the server, points discord.py at it
    async with fake.running(bot):              # bot.start(fake.token), waits for on_ready
        rec = await fake.send_slash_command("outpaint", {"image": Upload("a.png", png)})
        await fake.wait_for(lambda f: rec.acknowledged)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

import discord
import discord.asset
import discord.gateway
import discord.http
import yarl
from aiohttp import web

from .gateway import Gateway, Session
from .models import (
    Channel,
    GatewayRecord,
    Guild,
    InteractionRecord,
    MessageVersion,
    RequestRecord,
    StoredAttachment,
    StoredMessage,
    Upload,
    User,
    walk_components,
)
from .rest import RequestHook, RestApi
from .state import FakeState

T = TypeVar("T")
UserRef = User | str | int
ChannelRef = Channel | int

# Application command option types.
OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP, OPT_STRING, OPT_INTEGER, OPT_BOOLEAN = 1, 2, 3, 4, 5
OPT_USER, OPT_CHANNEL, OPT_NUMBER, OPT_ATTACHMENT = 6, 7, 10, 11
# Component types that matter in a modal.
COMPONENT_ACTION_ROW, COMPONENT_TEXT_INPUT, COMPONENT_LABEL, COMPONENT_FILE_UPLOAD = 1, 4, 18, 19
COMPONENT_RADIO_GROUP, COMPONENT_CHECKBOX = 21, 23


WAIT_S = 120.0
"""How long a wait gives up by default: generous, since a loaded CI machine can be slow; the
waits end as soon as their condition holds, so this never slows a passing test."""


@contextlib.contextmanager
def point_discord_at(base_url: str) -> Iterator[None]:
    """Point discord.py at a fake Discord listening at ``base_url`` (also in another process, e.g.
    a bot started by a test); restore afterwards."""
    saved = (
        discord.http.Route.BASE,
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
        discord.asset.Asset.BASE,
    )
    discord.http.Route.BASE = f"{base_url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(base_url.replace("http://", "ws://") + "/")
    discord.asset.Asset.BASE = f"{base_url}/cdn"
    try:
        yield
    finally:
        (
            discord.http.Route.BASE,
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            discord.asset.Asset.BASE,
        ) = saved


class FakeDiscord:
    """A fake Discord (REST, gateway, CDN) on ``127.0.0.1`` for the real discord.py client.

    The default world: the bot user (``bot_user``, id == application id), users ``alice``,
    ``bob`` and ``carol``, guild ``guild`` (channels ``#general`` = ``channel`` and
    ``#results``) and ``second_guild`` (channel ``second_channel``), everyone in both guilds.
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        premium_tier: int = 0,
        upload_limit: int | None = None,
        message_content_allowed: bool = True,
        members_allowed: bool = True,
        presences_allowed: bool = True,
    ) -> None:
        self.state = FakeState(
            token=token,
            base_url="http://127.0.0.1:0",
            message_content_allowed=message_content_allowed,
            members_allowed=members_allowed,
            presences_allowed=presences_allowed,
        )
        self.gateway = Gateway(self.state)
        self.rest = RestApi(self.state, self.gateway)
        self.alice = self.state.add_user("alice")
        self.bob = self.state.add_user("bob")
        self.carol = self.state.add_user("carol")
        self.guild = self.state.add_guild(
            "Fake Guild",
            owner=self.alice,
            channels=("general", "results"),
            premium_tier=premium_tier,
            upload_limit=upload_limit,
        )
        self.second_guild = self.state.add_guild("Second Guild", owner=self.bob)
        self._runner: web.AppRunner | None = None
        self._patches: contextlib.ExitStack | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_get("/", self.gateway.handle)
        app.router.add_get("/resume-gateway", self.gateway.handle)
        self.rest.install(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.state.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.release_downloads()  # a held download would hold the server's shutdown
        if self._runner is not None:
            await self.gateway.close_all()
            await self._runner.cleanup()
            self._runner = None

    def patched(self) -> contextlib.AbstractContextManager[None]:
        """Point discord.py (REST base, gateway, CDN assets) at this fake; restore afterwards."""
        return point_discord_at(self.base_url)

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        self._patches = contextlib.ExitStack()
        self._patches.enter_context(self.patched())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self._patches is not None:
            self._patches.close()
            self._patches = None
        await self.stop()
        if exc_type is None and self.state.internal_errors:
            raise AssertionError(
                "the fake Discord failed internally:\n" + "\n".join(self.state.internal_errors)
            )

    @contextlib.asynccontextmanager
    async def running(
        self,
        client: discord.Client,
        *,
        timeout: float = WAIT_S,  # noqa: ASYNC109
    ) -> AsyncIterator[discord.Client]:
        """Run ``client.start(token)`` until the block ends; enter once it is ready.

        "Ready" means on_ready fired and every guild of the fake the bot is in is cached.
        On exit the client is closed and its task awaited; its errors propagate.
        """
        task = asyncio.create_task(client.start(self.token), name="fakediscord-client")
        try:
            ready = asyncio.create_task(self._until_ready(client))
            done, _ = await asyncio.wait({task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if ready not in done:
                ready.cancel()
                if task in done:
                    task.result()  # raises the client's error
                    raise RuntimeError("the client stopped before it was ready")
                raise TimeoutError(f"the client was not ready within {timeout}s")
            ready.result()
            yield client
        finally:
            await client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=timeout)

    async def _until_ready(self, client: discord.Client) -> None:
        await client.wait_until_ready()
        # Re-checked on each guild the client gets and on each request (the bot may leave one).
        while {g.id for g in self.state.guilds.values() if g.bot_is_member} - {g.id for g in client.guilds}:
            waiters = [
                asyncio.ensure_future(client.wait_for("guild_available")),
                asyncio.ensure_future(self.state.notifier.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    # -- addresses and the world -----------------------------------------------------------

    @property
    def token(self) -> str:
        return self.state.token

    @property
    def base_url(self) -> str:
        return self.state.base_url

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/"

    @property
    def app_id(self) -> int:
        return self.state.app_id

    @property
    def bot_user(self) -> User:
        return self.state.bot_user

    @property
    def channel(self) -> Channel:
        return self.guild.channel

    @property
    def second_channel(self) -> Channel:
        return self.second_guild.channel

    @property
    def users(self) -> dict[str, User]:
        return {u.name: u for u in self.state.users.values()}

    def add_user(self, name: str) -> User:
        """A new human member of every guild (add before the client connects)."""
        return self.state.add_user(name)

    def add_guild(self, name: str, *, premium_tier: int = 0, upload_limit: int | None = None) -> Guild:
        """A new guild with a ``#general`` channel (add before the client connects)."""
        return self.state.add_guild(
            name, owner=self.alice, premium_tier=premium_tier, upload_limit=upload_limit
        )

    async def set_permissions(self, guild: Guild, permissions: int) -> None:
        """Change the bot's permissions in ``guild`` (its @everyone role); sends GUILD_ROLE_UPDATE."""
        guild.everyone_permissions = permissions
        (role,) = guild.role_payloads()
        await self.gateway.dispatch("GUILD_ROLE_UPDATE", {"guild_id": str(guild.id), "role": role})

    async def set_channel_nsfw(self, channel: Channel, nsfw: bool = True) -> None:
        """Mark a channel age-restricted (or not); sends CHANNEL_UPDATE."""
        channel.nsfw = nsfw
        await self.gateway.dispatch("CHANNEL_UPDATE", channel.payload())

    def set_member_permissions(self, guild: Guild, user: User, permissions: int) -> None:
        """What ``user``'s interactions in ``guild`` say they may do (``interaction.permissions``)."""
        guild.member_permissions[user.id] = permissions

    async def set_premium_tier(self, guild: Guild, tier: int, *, upload_limit: int | None = None) -> None:
        """Change a guild's boost tier (and upload limit override); sends GUILD_UPDATE."""
        guild.premium_tier, guild.upload_limit = tier, upload_limit
        data = guild.payload(self.state.users)
        await self.gateway.dispatch(
            "GUILD_UPDATE", {k: v for k, v in data.items() if k not in ("members", "channels")}
        )

    # -- logs and inspection ---------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        return self.state.requests

    @property
    def gateway_log(self) -> list[GatewayRecord]:
        return self.state.gateway_log

    @property
    def sessions(self) -> list[Session]:
        return list(self.gateway.sessions.values())

    @property
    def commands(self) -> dict[int | None, list[dict[str, Any]]]:
        """Synced application commands: ``None`` -> global, guild id -> that guild's."""
        return self.state.commands

    def requests_to(self, method: str | None = None, route: str | None = None) -> list[RequestRecord]:
        """Requests with that method whose route pattern or path contains ``route``."""
        return [r for r in self.requests if r.matches(method, route)]

    def message(self, message_id: int) -> StoredMessage:
        return self.state.messages[message_id]

    def messages_in(
        self, channel: ChannelRef | None = None, *, include_deleted: bool = False
    ) -> list[StoredMessage]:
        """Messages of a channel (default ``channel``), oldest first, ephemeral ones included."""
        channel_id = self.state.channel(channel or self.channel).id
        return [
            m
            for m in self.state.messages.values()
            if m.channel_id == channel_id and (include_deleted or not m.deleted)
        ]

    def bot_messages(self, channel: ChannelRef | None = None) -> list[StoredMessage]:
        return [m for m in self.messages_in(channel) if m.author.id == self.bot_user.id]

    def downloads(self, attachment: StoredAttachment | int | None = None) -> list[RequestRecord]:
        """CDN requests (``url`` and ``proxy_url``), all or for one attachment."""
        att_id = attachment.id if isinstance(attachment, StoredAttachment) else attachment
        return [
            r
            for r in self.requests
            if r.route.startswith(("GET /cdn/", "GET /media/"))
            and (att_id is None or r.params.get("attachment_id") == str(att_id))
        ]

    def edits_of(self, message_id: int) -> list[MessageVersion]:
        """The versions of a message after each edit (``MessageVersion``; creation excluded)."""
        return self.message(message_id).edits

    def files_of(self, message_id: int) -> list[StoredAttachment]:
        """The attachments a message has now."""
        return self.message(message_id).attachments

    def original_of(self, interaction: InteractionRecord) -> StoredMessage | None:
        """The interaction's original response message (after 4/5, or the clicked message after 6/7)."""
        if interaction.original_message_id is None:
            return None
        return self.state.messages[interaction.original_message_id]

    def followups_of(self, interaction: InteractionRecord) -> list[StoredMessage]:
        return [self.state.messages[i] for i in interaction.followup_ids]

    async def wait_for(self, predicate: Callable[[FakeDiscord], T], *, timeout: float = WAIT_S) -> T:  # noqa: ASYNC109
        """Wait until ``predicate(fake)`` is truthy, re-checked after every request/gateway event.

        Returns the truthy value. On timeout raises ``TimeoutError`` listing the last requests.
        """
        try:
            async with asyncio.timeout(timeout):
                while not (result := predicate(self)):
                    await self.state.notifier.wait()
                return result
        except TimeoutError:
            recent = "\n  ".join(repr(r) for r in self.requests[-15:])
            raise TimeoutError(f"condition not met within {timeout}s; last requests:\n  {recent}") from None

    async def wait_response(self, interaction: InteractionRecord, *, timeout: float = WAIT_S) -> int:  # noqa: ASYNC109
        """Wait until the bot answered the interaction; returns the callback type."""
        await self.wait_for(lambda _: interaction.acknowledged, timeout=timeout)
        assert interaction.response_type is not None
        return interaction.response_type

    async def wait_for_message(
        self,
        predicate: Callable[[StoredMessage], bool] = lambda _: True,
        *,
        channel: ChannelRef | None = None,
        timeout: float = WAIT_S,  # noqa: ASYNC109
    ) -> StoredMessage:
        """Wait for a (non-deleted) bot message in ``channel`` that satisfies ``predicate``."""

        def find(_: FakeDiscord) -> StoredMessage | None:
            return next((m for m in self.bot_messages(channel) if predicate(m)), None)

        return await self.wait_for(find, timeout=timeout)

    async def wait_connected(self, *, timeout: float = WAIT_S) -> Session:  # noqa: ASYNC109
        """Wait until a gateway session is connected; returns it."""

        def connected(_: FakeDiscord) -> Session | None:
            return next((s for s in self.sessions if s.connected and s.resumable), None)

        return await self.wait_for(connected, timeout=timeout)

    # -- switches --------------------------------------------------------------------------

    def expire(self, interaction: InteractionRecord | None = None, *, status: int = 401) -> None:
        """Expire an interaction's token (all interactions so far when None).

        Webhook routes then answer ``status`` (401: code 50027 "Invalid Webhook Token"; 404:
        code 10015 "Unknown Webhook"), the callback route 404 code 10062 "Unknown interaction".
        """
        for record in [interaction] if interaction else self.state.interactions.values():
            record.expired_status = status

    def rate_limit_next(
        self, count: int = 1, *, retry_after: float = 0.05, route: str | None = None, is_global: bool = False
    ) -> None:
        """Answer the next ``count`` REST requests (matching ``route``, a substring of the route
        pattern or path, if given) with 429 and ``retry_after``; discord.py waits and retries."""
        self.rest.rate_limit_next(count, retry_after, route, is_global)

    def after_next(self, method: str, route: str, callback: Callable[[RequestRecord], Any]) -> None:
        """Run ``callback(record)`` (sync or async) once, after the next ``method`` request matching
        ``route`` was handled and before it is answered: e.g. to stop the bot right after Discord
        created a message it posted, before the bot learns that it did."""
        self.rest.hooks.append(RequestHook(method.upper(), route, callback))

    @property
    def held_downloads(self) -> int:
        """Downloads of ``cdn_fault="hang"`` attachments the CDN is holding now."""
        return self.state.held_downloads

    def release_downloads(self) -> None:
        """Let the CDN answer the held downloads (and any later ones) of "hang" attachments."""
        self.state.downloads_released.set()
        self.state.notifier.notify()

    async def delete_message(self, message: StoredMessage | int) -> None:
        """A moderator deletes a message (MESSAGE_DELETE); the bot's later edits of it get 10008."""
        msg = self.state.message(None, message.id if isinstance(message, StoredMessage) else int(message))
        self.state.delete_message(msg)
        await self.rest._message_deleted(msg)
        self.state.notifier.notify()

    @property
    def message_content_allowed(self) -> bool:
        return self.state.message_content_allowed

    @message_content_allowed.setter
    def message_content_allowed(self, value: bool) -> None:
        """The portal's Message Content intent switch (identify with it when off -> close 4014)."""
        self.state.message_content_allowed = value

    # -- gateway control -------------------------------------------------------------------

    async def disconnect(self, code: int = 4000, *, resumable: bool = True) -> None:
        """Close the gateway connections; the client reconnects (RESUME, or IDENTIFY if not resumable)."""
        await self.gateway.disconnect(code, resumable=resumable)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT."""
        await self.gateway.request_reconnect()

    async def invalidate_sessions(self) -> None:
        """Send op 9 INVALID_SESSION (false): the client identifies again and gets a new READY."""
        await self.gateway.invalidate_sessions()

    async def dispatch(self, event: str, data: Any) -> int:
        """Send any raw DISPATCH event to all live sessions."""
        return await self.gateway.dispatch(event, data)

    # -- driving the bot: users act --------------------------------------------------------

    async def send_message(
        self,
        channel: ChannelRef | None = None,
        content: str = "",
        *,
        author: UserRef | None = None,
        reference: StoredMessage | int | None = None,
        mentions_bot: bool = False,
        ping_reply: bool = True,
        attachments: Sequence[Upload | tuple[Any, ...]] = (),
    ) -> StoredMessage:
        """A user posts a message (MESSAGE_CREATE).

        ``reference``: reply to that message; with ``ping_reply`` (Discord's default) the replied
        author is mentioned. ``mentions_bot`` prefixes ``<@bot>`` like typing @Bot. Without the
        message-content intent the bot sees content only when it is mentioned.
        """
        chan = self.state.channel(channel or self.channel)
        user = self.state.user(author or self.alice)
        if mentions_bot and self.bot_user.mention not in content:
            content = f"{self.bot_user.mention} {content}".rstrip()
        mention_ids = [
            u.id for u in self.state.users.values() if f"<@{u.id}>" in content or f"<@!{u.id}>" in content
        ]
        payload: dict[str, Any] = {"content": content}
        if reference is not None:
            ref_id = reference.id if isinstance(reference, StoredMessage) else int(reference)
            payload["message_reference"] = {"message_id": ref_id}
            payload["allowed_mentions"] = {"replied_user": ping_reply}
        uploads = [Upload.of(a) for a in attachments]
        msg = self.state.create_message(
            chan, user, payload, uploads=uploads, mention_ids=mention_ids, check_limits=False
        )
        await self.rest._message_created(msg)
        return msg

    async def send_slash_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: UserRef | None = None,
        channel: ChannelRef | None = None,
        attachments: dict[str, Upload | tuple[Any, ...]] | Sequence[Upload | tuple[Any, ...]] | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """A user runs ``/name`` (``"group sub"`` for subcommands) with ``options``.

        Option values: str, int, float, bool, ``Upload`` (an attachment), ``User``, ``Channel``.
        Types come from the synced command if the bot synced to the fake, else from the values.
        ``attachments``: ``{option: Upload | (filename, bytes[, content_type])}``, or a list
        assigned in order to the attachment options of the synced command.
        """
        chan = self.state.channel(channel or self.channel)
        who = self.state.user(user or self.alice)
        base, *path = name.split()
        schema = self.state.find_command(base, chan.guild_id, 1)
        leaf_schema = _leaf_options(schema, path)
        values = dict(options or {})
        values.update(self._attachment_options(attachments, leaf_schema, name))
        resolved: dict[str, dict[str, Any]] = {}
        opts = [self._option(k, v, leaf_schema.get(k), resolved, chan) for k, v in values.items()]
        for i, sub in reversed(list(enumerate(path))):
            opts = [
                {
                    "name": sub,
                    "type": OPT_SUB_COMMAND if i == len(path) - 1 else OPT_SUB_COMMAND_GROUP,
                    "options": opts,
                }
            ]
        data: dict[str, Any] = {
            "id": _command_id(schema, self.state),
            "name": base,
            "type": 1,
            "options": opts,
        }
        if resolved:
            data["resolved"] = resolved
        if schema is not None and "guild_id" in schema:
            data["guild_id"] = schema["guild_id"]
        return await self._interact(2, who, chan, data, locale=locale)

    async def context_menu(
        self,
        name: str,
        target_message: StoredMessage | int | None = None,
        *,
        target_user: UserRef | None = None,
        user: UserRef | None = None,
        channel: ChannelRef | None = None,
    ) -> InteractionRecord:
        """A user picks a message (or, with ``target_user``, a user) context-menu command."""
        who = self.state.user(user or self.alice)
        if target_message is not None:
            msg_id = target_message.id if isinstance(target_message, StoredMessage) else int(target_message)
            target = self.state.message(None, msg_id)
            chan = self.state.channel(channel or target.channel_id)
            menu_type = 3
            resolved = {"messages": {str(target.id): self.state.message_payload(target)}}
            target_id = target.id
        elif target_user is not None:
            target_u = self.state.user(target_user)
            chan = self.state.channel(channel or self.channel)
            guild = self.state.guild_of(chan)
            menu_type = 2
            resolved = {
                "users": {str(target_u.id): target_u.payload()},
                "members": {
                    str(target_u.id): {**guild.member_payload(target_u, with_user=False), "permissions": "0"}
                },
            }
            target_id = target_u.id
        else:
            raise ValueError("context_menu needs target_message or target_user")
        schema = self.state.find_command(name, chan.guild_id, menu_type)
        data: dict[str, Any] = {
            "id": _command_id(schema, self.state),
            "name": name,
            "type": menu_type,
            "target_id": str(target_id),
            "resolved": resolved,
        }
        if schema is not None and "guild_id" in schema:
            data["guild_id"] = schema["guild_id"]
        return await self._interact(2, who, chan, data)

    async def click_button(
        self,
        message: StoredMessage | int,
        custom_id: str,
        *,
        user: UserRef | None = None,
        force: bool = False,
    ) -> InteractionRecord:
        """A user clicks the button ``custom_id`` on a bot message.

        Raises ``LookupError`` if the message has no such enabled button, unless ``force``
        (e.g. to click a button whose message the fake does not know the components of).
        """
        msg = self._component_message(message, custom_id, component_type=2, force=force)
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(
            3, self.state.user(user or self.alice), self.state.channel(msg.channel_id), data, message=msg
        )

    async def select(
        self,
        message: StoredMessage | int,
        custom_id: str,
        values: Sequence[str],
        *,
        user: UserRef | None = None,
    ) -> InteractionRecord:
        """A user picks ``values`` in the string select ``custom_id`` on a bot message."""
        msg = self._component_message(message, custom_id, component_type=3, force=False)
        data = {"custom_id": custom_id, "component_type": 3, "values": list(values)}
        return await self._interact(
            3, self.state.user(user or self.alice), self.state.channel(msg.channel_id), data, message=msg
        )

    async def submit_modal(
        self,
        interaction: InteractionRecord,
        values: dict[str, Any],
        *,
        user: UserRef | None = None,
    ) -> InteractionRecord:
        """Submit the modal the bot answered ``interaction`` with.

        ``values`` by input custom_id: text input or radio group -> str, select or checkbox
        group -> list of str, checkbox -> bool, file upload -> list of ``Upload``. Inputs not
        given are submitted empty (text inputs with their default value).
        """
        modal = interaction.modal
        if modal is None:
            raise LookupError(f"the bot did not answer interaction {interaction.id} with a modal")
        known = {c["custom_id"] for c in walk_components(modal.get("components")) if "custom_id" in c}
        if unknown := set(values) - known:
            raise LookupError(f"the modal has no inputs {sorted(unknown)}; it has {sorted(known)}")
        resolved: dict[str, dict[str, Any]] = {}
        components = self._submitted(modal.get("components", []), values, resolved)
        data: dict[str, Any] = {"custom_id": modal["custom_id"], "components": components}
        if resolved:
            data["resolved"] = resolved
        msg = self.state.messages.get(interaction.source_message_id or 0)
        chan = self.state.channel(interaction.channel_id)
        return await self._interact(5, self.state.user(user or interaction.user), chan, data, message=msg)

    # -- helpers ---------------------------------------------------------------------------

    async def _interact(
        self,
        type: int,
        user: User,
        channel: Channel,
        data: dict[str, Any],
        *,
        message: StoredMessage | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        record = self.state.new_interaction(
            type=type, user=user, channel=channel, data=data, message=message, locale=locale
        )
        if not await self.gateway.dispatch("INTERACTION_CREATE", record.payload):
            raise RuntimeError(
                "no bot session on the fake gateway: start the client first (fake.running(client))"
            )
        return record

    def _component_message(
        self, message: StoredMessage | int, custom_id: str, *, component_type: int, force: bool
    ) -> StoredMessage:
        msg = self.state.message(None, message.id if isinstance(message, StoredMessage) else int(message))
        component = msg.component(custom_id)
        if not force and (
            component is None or component.get("type") != component_type or component.get("disabled")
        ):
            raise LookupError(
                f"message {msg.id} has no enabled component {custom_id!r} of type {component_type}; "
                f"it has {msg.custom_ids}"
            )
        return msg

    def _submitted(
        self, components: list[dict[str, Any]], values: dict[str, Any], resolved: dict[str, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The MODAL_SUBMIT ``components`` for a modal's layout: rows and labels kept, inputs filled."""
        result: list[dict[str, Any]] = []
        for component in components:
            ctype, custom_id = component.get("type"), component.get("custom_id")
            if ctype == COMPONENT_ACTION_ROW:
                result.append(
                    {"type": ctype, "components": self._submitted(component["components"], values, resolved)}
                )
            elif ctype == COMPONENT_LABEL:
                inner = self._submitted([component["component"]], values, resolved)
                result.extend({"type": ctype, "component": c} for c in inner)
            elif custom_id is None:
                continue  # text displays and other static parts
            elif ctype == COMPONENT_TEXT_INPUT:
                value = values.get(custom_id, component.get("value") or "")
                result.append({"type": ctype, "custom_id": custom_id, "value": value})
            elif ctype == COMPONENT_RADIO_GROUP:
                result.append({"type": ctype, "custom_id": custom_id, "value": values.get(custom_id)})
            elif ctype == COMPONENT_CHECKBOX:
                result.append(
                    {"type": ctype, "custom_id": custom_id, "value": bool(values.get(custom_id, False))}
                )
            elif ctype == COMPONENT_FILE_UPLOAD:
                ids = []
                for upload in values.get(custom_id, []):
                    stored = self.state.store_upload(
                        Upload.of(upload), parent_id=self.app_id, kind="ephemeral-attachments"
                    )
                    resolved.setdefault("attachments", {})[str(stored.id)] = stored.payload()
                    ids.append(str(stored.id))
                result.append({"type": ctype, "custom_id": custom_id, "values": ids})
            else:  # selects and checkbox groups
                result.append(
                    {"type": ctype, "custom_id": custom_id, "values": list(values.get(custom_id, []))}
                )
        return result

    def _attachment_options(
        self,
        attachments: dict[str, Any] | Sequence[Any] | None,
        leaf_schema: dict[str, dict[str, Any]],
        name: str,
    ) -> dict[str, Upload]:
        if not attachments:
            return {}
        if isinstance(attachments, dict):
            return {k: Upload.of(v) for k, v in attachments.items()}
        slots = [k for k, o in leaf_schema.items() if o.get("type") == OPT_ATTACHMENT]
        if len(slots) < len(attachments):
            raise ValueError(
                f"/{name}: the fake knows {len(slots)} attachment option(s) of this command (sync the "
                "commands to the fake, or pass attachments as {option_name: Upload})"
            )
        return {slot: Upload.of(a) for slot, a in zip(slots, attachments, strict=False)}

    def _option(
        self,
        name: str,
        value: Any,
        schema: dict[str, Any] | None,
        resolved: dict[str, dict[str, Any]],
        channel: Channel,
    ) -> dict[str, Any]:
        declared = schema.get("type") if schema else None
        if isinstance(value, tuple):
            value = Upload.of(value)
        if isinstance(value, Upload):
            stored = self.state.store_upload(value, parent_id=self.app_id, kind="ephemeral-attachments")
            resolved.setdefault("attachments", {})[str(stored.id)] = stored.payload()
            return {"name": name, "type": OPT_ATTACHMENT, "value": str(stored.id)}
        if isinstance(value, User):
            guild = self.state.guild_of(channel)
            resolved.setdefault("users", {})[str(value.id)] = value.payload()
            member = {**guild.member_payload(value, with_user=False), "permissions": "0"}
            resolved.setdefault("members", {})[str(value.id)] = member
            return {"name": name, "type": OPT_USER, "value": str(value.id)}
        if isinstance(value, Channel):
            channel_data = {
                **value.payload(),
                "permissions": str(self.state.guild_of(value).everyone_permissions),
            }
            resolved.setdefault("channels", {})[str(value.id)] = channel_data
            return {"name": name, "type": OPT_CHANNEL, "value": str(value.id)}
        if isinstance(value, bool):
            inferred = OPT_BOOLEAN
        elif isinstance(value, int):
            inferred = OPT_INTEGER
        elif isinstance(value, float):
            inferred = OPT_NUMBER
        else:
            inferred = OPT_STRING
        return {"name": name, "type": declared or inferred, "value": value}


def _leaf_options(schema: dict[str, Any] | None, path: list[str]) -> dict[str, dict[str, Any]]:
    """The declared options (by name) of the command or subcommand that ``path`` names."""
    options = schema.get("options", []) if schema else []
    for sub in path:
        options = next((o.get("options", []) for o in options if o["name"] == sub), [])
    return {o["name"]: o for o in options}


def _command_id(schema: dict[str, Any] | None, state: FakeState) -> str:
    return schema["id"] if schema else str(state.ids.next())

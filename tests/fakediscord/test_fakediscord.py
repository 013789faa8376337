"""Self-tests of the fake Discord with a minimal real discord.py client (not the bot)."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import discord
import pytest
from discord import app_commands
from PIL import Image

from . import FakeDiscord, Upload
from .models import DEFAULT_PERMISSIONS, MANAGE_MESSAGES, READ_MESSAGE_HISTORY

TIMEOUT = 30


def png(width: int = 8, height: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


class Probe(discord.Client):
    """A tiny client with one slash command, one message context menu and a button view."""

    def __init__(self, *, intents: discord.Intents | None = None) -> None:
        super().__init__(intents=intents or discord.Intents.default(), guild_ready_timeout=0.5)
        self.tree = app_commands.CommandTree(self)
        self.messages: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.clicks: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.resumed_event = asyncio.Event()
        self.proceed = asyncio.Event()  # /late waits for it after deferring
        self.downloads: list[bytes] = []
        self._add_commands()

    def _add_commands(self) -> None:
        @self.tree.command(name="grow", description="grow an image")
        @app_commands.describe(image="the image", times="how often")
        async def grow(interaction: discord.Interaction, image: discord.Attachment, times: int = 1) -> None:
            await interaction.response.defer(thinking=True)
            data = await image.read()
            self.downloads.append(data)
            await interaction.edit_original_response(
                content=f"grew {image.filename} x{times}",
                attachments=[discord.File(io.BytesIO(data + b"!"), filename="result.png")],
                view=ButtonView(self),
            )
            await interaction.followup.send(f"done for {interaction.user.name}")

        @self.tree.command(name="late", description="edits after the token expired")
        async def late(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.proceed.wait()  # the test expires the token, then lets us go on
            try:
                await interaction.edit_original_response(content="too late")
            except discord.HTTPException as error:
                await self.errors.put(error)
                assert interaction.channel is not None
                await interaction.channel.send("fell back to a channel message")  # type: ignore[union-attr]

        @self.tree.context_menu(name="Inspect")
        async def inspect(interaction: discord.Interaction, message: discord.Message) -> None:
            names = ",".join(a.filename for a in message.attachments)
            await interaction.response.send_message(f"inspected {message.id}: {names}", ephemeral=True)

    async def setup_hook(self) -> None:
        self.add_view(ButtonView(self))  # persistent: survives restarts

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No 5 s pause before re-identifying (discord.py's default)."""

    async def on_message(self, message: discord.Message) -> None:
        if self.user is not None and message.author.id != self.user.id:
            await self.messages.put(message)

    async def on_resumed(self) -> None:
        self.resumed_event.set()


class ButtonView(discord.ui.View):
    def __init__(self, probe: Probe) -> None:
        super().__init__(timeout=None)
        self.probe = probe

    @discord.ui.button(label="Again", custom_id="probe:again", style=discord.ButtonStyle.primary)
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button[ButtonView]) -> None:
        await self.probe.clicks.put((button.custom_id or "", interaction.user.id))
        await interaction.response.edit_message(content="clicked")


@pytest.fixture
async def fake() -> FakeDiscord:
    async with FakeDiscord() as fake:
        yield fake


async def test_connects_and_sees_guilds(fake: FakeDiscord) -> None:
    probe = Probe()
    async with fake.running(probe):
        guild = probe.get_guild(fake.guild.id)
        assert guild is not None and guild.name == "Fake Guild"
        assert guild.me is not None and guild.me.id == fake.bot_user.id
        assert guild.filesize_limit == 10 * 1024 * 1024
        assert {c.name for c in guild.text_channels} == {"general", "results"}
        assert probe.get_guild(fake.second_guild.id) is not None
        assert probe.application_id == fake.app_id
        identify = [r for r in fake.gateway_log if r.direction == "recv" and r.op == 2]
        assert identify and identify[0].d["token"] == "<redacted>"
        ops = [(r.direction, r.op) for r in fake.gateway_log]
        assert ops[:3] == [("send", 10), ("recv", 1), ("send", 11)]  # HELLO, heartbeat, ACK
        events = [r.t for r in fake.gateway_log if r.op == 0]
        assert events[:3] == ["READY", "GUILD_CREATE", "GUILD_CREATE"]
    assert fake.requests_to("GET", "/users/@me")


async def test_slash_command_with_attachment_defer_edit_followup(fake: FakeDiscord) -> None:
    probe = Probe()
    async with fake.running(probe):
        await probe.tree.sync()
        assert [c["name"] for c in fake.commands[None]] == ["grow", "late", "Inspect"]
        image = png()
        rec = await fake.send_slash_command(
            "grow", {"times": 3}, attachments=[("in.png", image, "image/png")]
        )
        original = await fake.wait_for(
            lambda f: (m := f.original_of(rec)) and m.edits and f.followups_of(rec) and m
        )

    assert rec.response_type == 5
    assert probe.downloads == [image]
    assert original.content == "grew in.png x3"
    assert [a.filename for a in original.attachments] == ["result.png"]
    assert original.attachments[0].data == image + b"!"
    assert original.custom_ids == ["probe:again"]
    assert not original.is_loading
    (followup,) = fake.followups_of(rec)
    assert followup.content == "done for alice"
    patch = fake.requests_to("PATCH", "/messages/@original")[0]
    assert patch.files[0].filename == "result.png" and patch.json["attachments"] == [
        {"id": 0, "filename": "result.png"}
    ]


async def test_button_click_reaches_the_view(fake: FakeDiscord) -> None:
    probe = Probe()
    async with fake.running(probe):
        channel = probe.get_channel(fake.channel.id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("pick", view=ButtonView(probe))
        stored = fake.message(sent.id)
        rec = await fake.click_button(stored, "probe:again", user=fake.bob)
        assert await asyncio.wait_for(probe.clicks.get(), TIMEOUT) == ("probe:again", fake.bob.id)
        await fake.wait_response(rec)
    assert rec.response_type == 7
    assert [v.content for v in stored.versions] == ["pick", "clicked"]
    with pytest.raises(LookupError):
        await fake.click_button(stored, "no-such-button")


async def test_age_restricted_channels_and_member_permissions(fake: FakeDiscord) -> None:
    fake.set_member_permissions(fake.guild, fake.bob, DEFAULT_PERMISSIONS | MANAGE_MESSAGES)
    probe = Probe()
    async with fake.running(probe):
        updated = asyncio.ensure_future(probe.wait_for("guild_channel_update"))
        await asyncio.sleep(0)  # the listener is registered
        await fake.set_channel_nsfw(fake.channel)
        before, after = await asyncio.wait_for(updated, TIMEOUT)
        assert (before.is_nsfw(), after.is_nsfw()) == (False, True)
        channel = probe.get_channel(fake.channel.id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("pick", view=ButtonView(probe))
        for user, moderator in ((fake.bob, True), (fake.carol, False)):
            seen = asyncio.ensure_future(probe.wait_for("interaction"))
            await asyncio.sleep(0)
            await fake.click_button(fake.message(sent.id), "probe:again", user=user)
            interaction = await asyncio.wait_for(seen, TIMEOUT)
            assert interaction.permissions.manage_messages is moderator
            assert isinstance(interaction.channel, discord.TextChannel) and interaction.channel.is_nsfw()


async def test_reply_reaches_on_message_with_reference(fake: FakeDiscord) -> None:
    probe = Probe()  # no message-content intent: the bot sees content only when mentioned
    async with fake.running(probe):
        channel = probe.get_channel(fake.channel.id)
        assert isinstance(channel, discord.TextChannel)
        result = await channel.send("a result", file=discord.File(io.BytesIO(png()), filename="r.png"))
        await fake.send_message(content="left 2", author=fake.bob, reference=result.id)
        reply = await asyncio.wait_for(probe.messages.get(), TIMEOUT)
        assert reply.content == "left 2"  # ping on reply mentions the bot
        assert reply.reference is not None and reply.reference.message_id == result.id
        assert isinstance(reply.reference.resolved, discord.Message)
        assert reply.reference.resolved.attachments[0].filename == "r.png"

        await fake.send_message(content="quiet", author=fake.bob, reference=result.id, ping_reply=False)
        quiet = await asyncio.wait_for(probe.messages.get(), TIMEOUT)
        assert quiet.content == "" and quiet.reference is not None

        data = png(5, 4)
        await fake.send_message(content="look", mentions_bot=True, attachments=[Upload("x.png", data)])
        mentioned = await asyncio.wait_for(probe.messages.get(), TIMEOUT)
        assert mentioned.content == f"<@{fake.bot_user.id}> look"
        assert (mentioned.attachments[0].width, mentioned.attachments[0].height) == (5, 4)
        assert await mentioned.attachments[0].read() == data


async def test_context_menu_gets_the_target_message(fake: FakeDiscord) -> None:
    probe = Probe()
    async with fake.running(probe):
        target = await fake.send_message(content="an image", attachments=[("cat.png", png())])
        rec = await fake.context_menu("Inspect", target, user=fake.carol)
        await fake.wait_response(rec)
    reply = fake.original_of(rec)
    assert reply is not None and reply.is_ephemeral
    assert reply.content == f"inspected {target.id}: cat.png"


async def test_expired_token_raises_and_channel_fallback_works(fake: FakeDiscord) -> None:
    probe = Probe()
    async with fake.running(probe):
        rec = await fake.send_slash_command("late")
        await fake.wait_response(rec)
        fake.expire(rec)
        probe.proceed.set()
        error = await asyncio.wait_for(probe.errors.get(), TIMEOUT)
        fallback = await fake.wait_for_message(lambda m: m.content == "fell back to a channel message")
    assert isinstance(error, discord.HTTPException)
    assert (error.status, error.code) == (401, 50027)
    assert fallback.webhook_id is None


async def test_lying_size_and_bad_bytes_are_served_as_given(fake: FakeDiscord) -> None:
    probe = Probe()
    async with fake.running(probe):
        msg = await fake.send_message(
            content="x",
            attachments=[Upload("huge.png", png()[:20], size=50 * 1024 * 1024)],
            mentions_bot=True,
        )
        seen = await asyncio.wait_for(probe.messages.get(), TIMEOUT)
        attachment = seen.attachments[0]
        assert attachment.size == 50 * 1024 * 1024
        assert not fake.downloads(msg.attachments[0])
        assert await attachment.read() == msg.attachments[0].data
        assert len(fake.downloads(msg.attachments[0])) == 1
        gone = await fake.send_message(
            content="y", attachments=[Upload("gone.png", b"", cdn_status=404)], mentions_bot=True
        )
        seen = await asyncio.wait_for(probe.messages.get(), TIMEOUT)
        with pytest.raises(discord.NotFound):
            await seen.attachments[0].read()
    assert gone.attachments[0].cdn_status == 404


async def test_upload_limit_and_rate_limit(fake: FakeDiscord) -> None:
    fake.guild.upload_limit = 100
    probe = Probe()
    async with fake.running(probe):
        channel = probe.get_channel(fake.channel.id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as too_big:
            await channel.send(file=discord.File(io.BytesIO(b"x" * 101), filename="big.bin"))
        assert (too_big.value.status, too_big.value.code) == (413, 40005)

        fake.rate_limit_next(route="/channels/")
        sent = await channel.send("after a 429")
    statuses = [r.status for r in fake.requests_to("POST", "/channels/{channel_id}/messages")]
    assert statuses == [413, 429, 200]
    assert fake.message(sent.id).content == "after a 429"


async def test_reconnect_resumes_and_replays_missed_events(fake: FakeDiscord) -> None:
    probe = Probe(intents=discord.Intents.default() | discord.Intents(message_content=True))
    async with fake.running(probe):
        session = fake.sessions[0]
        await fake.disconnect()
        await fake.send_message(content="while away", author=fake.carol)  # buffered, replayed on RESUME
        await asyncio.wait_for(probe.resumed_event.wait(), TIMEOUT)
        missed = await asyncio.wait_for(probe.messages.get(), TIMEOUT)
        assert missed.content == "while away"
        assert fake.sessions == [session] and session.connected
        resume = [r for r in fake.gateway_log if r.direction == "recv" and r.op == 6]
        assert resume and resume[0].d["session_id"] == session.id

        await fake.invalidate_sessions()  # like a Discord-side restart: the client identifies anew
        await fake.wait_for(lambda f: len(f.sessions) == 2 and f.sessions[1].connected)
        rec = await fake.send_slash_command("late")
        assert await fake.wait_response(rec) == 5
        probe.proceed.set()
        await fake.wait_for(lambda f: f.original_of(rec) and f.original_of(rec).content == "too late")


async def test_restarted_client_keeps_persistent_buttons(fake: FakeDiscord) -> None:
    first = Probe()
    async with fake.running(first):
        channel = first.get_channel(fake.channel.id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("persistent", view=ButtonView(first))
    second = Probe()
    async with fake.running(second):
        rec = await fake.click_button(sent.id, "probe:again")
        assert await asyncio.wait_for(second.clicks.get(), TIMEOUT) == ("probe:again", fake.alice.id)
        await fake.wait_response(rec)
    assert first.clicks.empty()


async def test_modal_round_trip(fake: FakeDiscord) -> None:
    class Ask(discord.ui.Modal, title="Outpaint"):
        direction = discord.ui.Label(
            text="Direction",
            component=discord.ui.Select(
                custom_id="dir", options=[discord.SelectOption(label=d) for d in ("left", "up")]
            ),
        )
        times = discord.ui.TextInput(label="times", custom_id="times", default="1")

        async def on_submit(self, interaction: discord.Interaction) -> None:
            assert isinstance(self.direction.component, discord.ui.Select)
            await interaction.response.send_message(
                f"going {self.direction.component.values} x{self.times.value}"
            )

    probe = Probe()

    @probe.tree.command(name="ask", description="asks")
    async def ask(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(Ask())

    async with fake.running(probe):
        rec = await fake.send_slash_command("ask")
        assert await fake.wait_response(rec) == 9
        assert rec.modal is not None and rec.modal["title"] == "Outpaint"
        submit = await fake.submit_modal(rec, {"dir": ["up"]})
        await fake.wait_response(submit)
    reply = fake.original_of(submit)
    assert reply is not None and reply.content == "going ['up'] x1"


async def test_first_followup_replaces_the_thinking_message(fake: FakeDiscord) -> None:
    probe = Probe()

    @probe.tree.command(name="quick", description="defers, then follows up")
    async def quick(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send("first")
        await interaction.followup.send("second")

    async with fake.running(probe):
        rec = await fake.send_slash_command("quick")
        await fake.wait_for(lambda f: f.followups_of(rec))
    original = fake.original_of(rec)
    assert original is not None and original.content == "first" and not original.is_loading
    assert [m.content for m in fake.followups_of(rec)] == ["second"]


async def test_privileged_intent_not_allowed_closes_4014() -> None:
    async with FakeDiscord(message_content_allowed=False) as fake:
        probe = Probe(intents=discord.Intents.default() | discord.Intents(message_content=True))
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with fake.running(probe):
                pass


async def test_unknown_route_is_recorded(fake: FakeDiscord) -> None:
    probe = Probe()
    async with fake.running(probe):
        with pytest.raises(discord.NotFound):
            await probe.http.request(discord.http.Route("GET", "/stickers/{sticker_id}", sticker_id=1))
    assert fake.requests_to("GET", "/stickers/1")[0].status == 404


async def test_history_before_and_after_and_deleted_messages(fake: FakeDiscord) -> None:
    probe = Probe()
    async with fake.running(probe):
        posted = [await fake.send_message(content=f"m{n}") for n in range(5)]
        channel = probe.get_partial_messageable(fake.channel.id)
        newest = [m.content async for m in channel.history(limit=3)]
        after = [m.content async for m in channel.history(limit=2, after=discord.Object(posted[1].id))]
        before = [m.content async for m in channel.history(before=discord.Object(posted[2].id))]
        assert (newest, after, before) == (["m4", "m3", "m2"], ["m2", "m3"], ["m1", "m0"])

        await fake.delete_message(posted[4])
        assert [m.content async for m in channel.history(limit=1)] == ["m3"]
        with pytest.raises(discord.NotFound) as gone:
            await channel.fetch_message(posted[4].id)
        assert gone.value.code == 10008
        fake.guild.everyone_permissions &= ~READ_MESSAGE_HISTORY
        assert [m async for m in channel.history()] == []  # as on Discord: no history, no error


async def test_a_cdn_that_hangs_or_drops(fake: FakeDiscord) -> None:
    probe = Probe()
    async with fake.running(probe):
        await fake.send_message(
            content="x",
            attachments=[
                Upload("slow.png", png(), cdn_fault="hang"),
                Upload("cut.png", png(), cdn_fault="drop"),
            ],
            mentions_bot=True,
        )
        slow, cut = (await asyncio.wait_for(probe.messages.get(), TIMEOUT)).attachments
        with pytest.raises(aiohttp.ClientPayloadError):
            await cut.read()
        download = asyncio.create_task(slow.read())
        await fake.wait_for(lambda f: f.held_downloads == 1)
        assert not download.done()
        fake.release_downloads()
        assert await asyncio.wait_for(download, TIMEOUT) == png()

"""The gateway websocket: HELLO, IDENTIFY/READY, RESUME with replay, heartbeats, dispatch.

JSON text frames only: discord.py asks for ``compress=zlib-stream`` in the URL but decodes text
frames as plain JSON, so the fake never compresses.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .models import GatewayRecord
from .state import INTENT_GUILD_MESSAGES, INTENT_MESSAGE_CONTENT, FakeState

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE_UPDATE = 3
OP_VOICE_STATE_UPDATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

CLOSE_UNKNOWN_OPCODE = 4001
CLOSE_DECODE_ERROR = 4002
CLOSE_NOT_AUTHENTICATED = 4003
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_ALREADY_AUTHENTICATED = 4005
CLOSE_DISALLOWED_INTENTS = 4014

HEARTBEAT_INTERVAL_MS = 41250


@dataclass
class Session:
    """A gateway session; it outlives its connection until invalidated (for RESUME)."""

    id: str
    intents: int
    shard: list[int] | None = None
    seq: int = 0
    sent: list[tuple[int, str]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    resumable: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def has_intent(self, bit: int) -> bool:
        return bool(self.intents & bit)


@dataclass
class Connection:
    ws: web.WebSocketResponse
    path: str
    query: dict[str, str]
    session: Session | None = None
    closed_by_server: bool = False


class Gateway:
    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.sessions: dict[str, Session] = {}
        self.connections: list[Connection] = []

    @property
    def resume_url(self) -> str:
        return self.state.base_url.replace("http://", "ws://") + "/resume-gateway"

    @property
    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.resumable]

    # -- the websocket handler -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(ws, request.path, dict(request.query))
        self.connections.append(conn)
        self.state.notifier.notify()
        try:
            await self._send(ws, None, {"op": OP_HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    await self._close(conn, CLOSE_DECODE_ERROR, "text frames only")
                    break
                await self._receive(conn, json.loads(msg.data))
        except Exception as error:  # a bug in the fake
            self.state.internal_errors.append(f"gateway: {error!r}")
            raise
        finally:
            self._detach(conn)
        return ws

    def _detach(self, conn: Connection) -> None:
        session = conn.session
        if session is not None and session.ws is conn.ws:
            session.ws = None
            # A client closing with 1000/1001 ends its session (as on Discord).
            if not conn.closed_by_server and conn.ws.close_code in (1000, 1001):
                session.resumable = False
        self.connections.remove(conn)
        self.state.notifier.notify()

    async def _receive(self, conn: Connection, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        session_id = conn.session.id if conn.session else None
        self.state.log_gateway(GatewayRecord("recv", session_id, op, d=_redact(op, data)))
        if op == OP_HEARTBEAT:
            await self._send(conn.ws, session_id, {"op": OP_HEARTBEAT_ACK, "d": None})
        elif op == OP_IDENTIFY:
            await self._identify(conn, data)
        elif op == OP_RESUME:
            await self._resume(conn, data)
        elif op == OP_REQUEST_GUILD_MEMBERS:
            await self._members_chunk(conn, data)
        elif op in (OP_PRESENCE_UPDATE, OP_VOICE_STATE_UPDATE):
            pass
        else:
            await self._close(conn, CLOSE_UNKNOWN_OPCODE, f"unknown opcode {op}")

    async def _identify(self, conn: Connection, data: dict[str, Any]) -> None:
        if conn.session is not None:
            await self._close(conn, CLOSE_ALREADY_AUTHENTICATED, "already authenticated")
            return
        if data.get("token") != self.state.token:
            await self._close(conn, CLOSE_AUTHENTICATION_FAILED, "authentication failed")
            return
        intents = int(data.get("intents", 0))
        if self.state.disallowed_intents(intents):
            await self._close(conn, CLOSE_DISALLOWED_INTENTS, "disallowed intent(s)")
            return
        session = Session(id=secrets.token_hex(16), intents=intents, shard=data.get("shard"), ws=conn.ws)
        conn.session = session
        self.sessions[session.id] = session
        guilds = [g for g in self.state.guilds.values() if g.bot_is_member]
        ready: dict[str, Any] = {
            "v": 10,
            "user": self.state.bot_user.payload(),
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_url,
            "application": {"id": str(self.state.app_id), "flags": self.state.application_flags()},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        async with session.lock:
            await self._dispatch_locked(session, "READY", ready)
            for guild in guilds:
                await self._dispatch_locked(session, "GUILD_CREATE", guild.payload(self.state.users))

    async def _resume(self, conn: Connection, data: dict[str, Any]) -> None:
        session = self.sessions.get(data.get("session_id", ""))
        if session is None or not session.resumable or data.get("token") != self.state.token:
            await self._send(conn.ws, None, {"op": OP_INVALID_SESSION, "d": False})
            return
        if session.ws is not None and session.ws is not conn.ws:
            old = next((c for c in self.connections if c.ws is session.ws), None)
            if old is not None:
                await self._close(old, 4000, "session resumed elsewhere")
        conn.session = session
        async with session.lock:
            session.ws = conn.ws
            last_seen = int(data.get("seq") or 0)
            for seq, text in session.sent:
                if seq > last_seen:
                    await conn.ws.send_str(text)
            await self._dispatch_locked(session, "RESUMED", {})

    async def _members_chunk(self, conn: Connection, data: dict[str, Any]) -> None:
        session = conn.session
        guild = self.state.guilds.get(int(data.get("guild_id", 0)))
        if session is None or guild is None:
            return
        user_ids = {int(u) for u in data.get("user_ids") or []}
        members = [
            guild.member_payload(self.state.users[uid])
            for uid in guild.member_ids
            if not user_ids or uid in user_ids
        ]
        chunk = {"guild_id": str(guild.id), "members": members, "chunk_index": 0, "chunk_count": 1}
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        async with session.lock:
            await self._dispatch_locked(session, "GUILD_MEMBERS_CHUNK", chunk)

    # -- sending ---------------------------------------------------------------------------

    async def _send(self, ws: web.WebSocketResponse, session_id: str | None, payload: dict[str, Any]) -> None:
        payload.setdefault("s", None)
        payload.setdefault("t", None)
        self.state.log_gateway(
            GatewayRecord("send", session_id, payload["op"], payload["t"], payload["s"], payload["d"])
        )
        if not ws.closed:
            await ws.send_str(json.dumps(payload))

    async def _dispatch_locked(self, session: Session, event: str, data: Any) -> None:
        session.seq += 1
        payload = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.sent.append((session.seq, json.dumps(payload)))
        self.state.log_gateway(GatewayRecord("send", session.id, OP_DISPATCH, event, session.seq, data))
        if session.connected:
            try:
                await session.ws.send_str(session.sent[-1][1])  # type: ignore[union-attr]
            except ConnectionError:
                session.ws = None  # it will be replayed on RESUME

    async def dispatch(
        self,
        event: str,
        data: Any = None,
        *,
        intent: int | None = None,
        build: Callable[[Session], Any] | None = None,
    ) -> int:
        """Send a DISPATCH to every live session (buffered for replay when disconnected).

        ``intent``: only sessions that identified with it get the event. ``build`` makes the
        payload per session (e.g. to hide message content). Returns how many sessions got it.
        """
        count = 0
        for session in self.live_sessions:
            if intent is not None and not session.has_intent(intent):
                continue
            async with session.lock:
                await self._dispatch_locked(session, event, build(session) if build else data)
            count += 1
        return count

    async def dispatch_message(self, event: str, msg_payload: Callable[[bool], dict[str, Any]]) -> None:
        """MESSAGE_CREATE/UPDATE to sessions with GUILD_MESSAGES, content hidden without the intent."""
        await self.dispatch(
            event,
            intent=INTENT_GUILD_MESSAGES,
            build=lambda s: msg_payload(s.has_intent(INTENT_MESSAGE_CONTENT)),
        )

    # -- server-driven connection events ---------------------------------------------------

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        conn.closed_by_server = True
        self.state.log_gateway(
            GatewayRecord("send", conn.session.id if conn.session else None, -1, d={"close": code})
        )
        await conn.ws.close(code=code, message=reason.encode())

    async def disconnect(self, code: int = 4000, *, resumable: bool = True) -> None:
        """Close every connection; with ``resumable=False`` their sessions are forgotten too."""
        for conn in list(self.connections):
            if conn.session is not None and not resumable:
                conn.session.resumable = False
            await self._close(conn, code, "fake disconnect")

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and resumes."""
        for conn in list(self.connections):
            await self._send(
                conn.ws, conn.session.id if conn.session else None, {"op": OP_RECONNECT, "d": None}
            )

    async def invalidate_sessions(self) -> None:
        """Send op 9 INVALID_SESSION (not resumable): the client identifies again."""
        for conn in list(self.connections):
            if conn.session is not None:
                conn.session.resumable = False
            await self._send(
                conn.ws, conn.session.id if conn.session else None, {"op": OP_INVALID_SESSION, "d": False}
            )

    async def close_all(self) -> None:
        for conn in list(self.connections):
            await self._close(conn, 1001, "fake Discord stopping")


def _redact(op: int | None, data: Any) -> Any:
    if op in (OP_IDENTIFY, OP_RESUME) and isinstance(data, dict) and "token" in data:
        return {**data, "token": "<redacted>"}
    return data

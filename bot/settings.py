"""The bot's own settings (token, limits, delivery), from the environment or ``.env``.

The Discord token is read from ``DISCORD_TOKEN``; everything else has the ``OUTPAINT_`` prefix like
the engine and queue settings in :mod:`outpaint_engine.settings`, which the bot reuses as they are.
The token is a :class:`~pydantic.SecretStr`: it is never logged and never put in a job.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from outpaint_engine.plan import MAX_CANDIDATES

TIMES_CEILING = 20
"""The most ``times`` any configuration may allow (one job's worth of GPU time stays bounded)."""


class BotSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OUTPAINT_",
        env_file=".env",
        extra="ignore",
        env_ignore_empty=True,  # `KEY=` = unset
    )

    discord_token: SecretStr | None = Field(
        None, validation_alias="DISCORD_TOKEN", description="The bot token from the developer portal."
    )
    dev_guild: int | None = Field(
        None, description="`outpaint-bot --sync` syncs the commands to this guild only (instant)."
    )
    guild_allowlist: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="Comma-separated guild ids the bot serves; empty = every guild."
    )
    message_content: bool = Field(
        False,
        description="Ask for the privileged message-content intent (enable it in the portal too); "
        "then replies to results work without mentioning the bot.",
    )

    max_times: int = Field(5, ge=1, le=TIMES_CEILING, description="Largest `times` a user may ask for.")
    max_prompt_chars: int = Field(300, ge=1, description="Longest prompt / negative prompt.")
    max_user_jobs: int = Field(2, ge=1, description="Queued or running jobs one user may have.")
    max_guild_jobs: int = Field(10, ge=1, description="Queued or running jobs one guild may have.")
    cooldown_s: float = Field(10.0, ge=0, description="Seconds between two jobs of one user.")
    max_candidates: int = Field(
        MAX_CANDIDATES,
        ge=1,
        le=MAX_CANDIDATES,
        description="Most versions of the last expansion a user may ask for to pick from (`candidates:`, "
        "1 to 4); 1 turns candidates off.",
    )
    max_guild_expansions_per_day: int = Field(
        1000, ge=0, description="Expansions one guild may ask for per UTC day; 0 = no limit."
    )

    max_attachment_mb: float = Field(20.0, gt=0, description="Largest attachment the bot downloads.")
    max_input_pixels: int = Field(40_000_000, gt=0, description="Largest input image, in pixels.")
    min_input_side: int = Field(64, gt=0, description="Smallest input side, in pixels.")
    max_input_aspect: float = Field(8.0, ge=1, description="Most extreme input aspect ratio (long/short).")
    max_canvas_side: int = Field(8192, gt=0, description="Longest side a result may reach.")
    max_canvas_pixels: int = Field(16_777_216, gt=0, description="Largest result, in pixels.")

    edit_interval_s: float = Field(1.5, ge=0, description="Least time between two status-message edits.")
    previews: bool = Field(True, description="Show a small preview while an expansion is denoising.")
    queue_refresh_s: float = Field(15.0, gt=0, description="How often a waiting job's position is refreshed.")

    download_timeout_s: float = Field(
        20.0, gt=0, description="Longest an attachment download may take before the user is told it failed."
    )
    reconnect_max_s: float = Field(
        10.0,
        gt=0,
        description="Longest wait between two attempts to reach the queue (or Discord) again while "
        "following a job; the wait doubles from a quarter second up to this.",
    )
    shutdown_grace_s: float = Field(
        25.0,
        ge=0,
        description="On stop, how long commands still downloading or queueing may take to finish "
        "(the rest are told to try again).",
    )

    @field_validator("guild_allowlist", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.replace(" ", ",").split(",") if part]
        if isinstance(value, int):
            return [value]
        return value

    @property
    def max_attachment_bytes(self) -> int:
        return int(self.max_attachment_mb * 1024 * 1024)

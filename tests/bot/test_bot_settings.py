"""Bot settings from the environment."""

from __future__ import annotations

import pytest

from bot.settings import BotSettings


def test_token_is_read_from_discord_token_and_kept_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "abc.def.ghi")
    settings = BotSettings(_env_file=None)
    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == "abc.def.ghi"
    assert "abc.def.ghi" not in repr(settings)
    assert "abc.def.ghi" not in str(settings.model_dump())


def test_allowlist_accepts_comma_separated_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPAINT_GUILD_ALLOWLIST", "123, 456,789")
    assert BotSettings(_env_file=None).guild_allowlist == [123, 456, 789]


def test_defaults_allow_every_guild_and_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    settings = BotSettings(_env_file=None)
    assert settings.discord_token is None
    assert settings.guild_allowlist == []
    assert settings.message_content is False


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPAINT_MAX_TIMES", "3")
    monkeypatch.setenv("OUTPAINT_COOLDOWN_S", "2.5")
    monkeypatch.setenv("OUTPAINT_MAX_ATTACHMENT_MB", "1")
    settings = BotSettings(_env_file=None)
    assert (settings.max_times, settings.cooldown_s, settings.max_attachment_bytes) == (3, 2.5, 1024 * 1024)


def test_max_times_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPAINT_MAX_TIMES", "1000")
    with pytest.raises(ValueError, match="max_times"):
        BotSettings(_env_file=None)

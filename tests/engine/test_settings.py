"""Settings from the environment: empty lines count as unset, errors name the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from outpaint_engine.settings import EngineSettings, QueueSettings, describe_setting_error


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPAINT_WINDOW", "")  # as in a copied .env.example
    monkeypatch.setenv("OUTPAINT_QUEUE", "")
    assert EngineSettings().window == 1024
    assert QueueSettings().queue == "embedded"


def test_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPAINT_WINDOW", "wide")
    with pytest.raises(ValidationError) as caught:
        EngineSettings()
    message = describe_setting_error(caught.value)
    assert message.startswith("bad setting OUTPAINT_WINDOW: ")
    assert "\n" not in message

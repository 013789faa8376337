"""Reading replies to results."""

from __future__ import annotations

import pytest

from bot.replies import ReplyRequest, parse_reply, strip_mentions
from outpaint_engine.job import Direction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("left 2", ReplyRequest(Direction.LEFT, 2)),
        ("up", ReplyRequest(Direction.UP)),
        ("right 3 a misty forest", ReplyRequest(Direction.RIGHT, 3, "a misty forest")),
        ("Down a sandy beach", ReplyRequest(Direction.DOWN, 1, "a sandy beach")),
        ("<@123> left x2", ReplyRequest(Direction.LEFT, 2)),
        ("<@!123> <@456>  up 2x snow", ReplyRequest(Direction.UP, 2, "snow")),
        ("⬇️ 2", ReplyRequest(Direction.DOWN, 2)),
        ("➡", ReplyRequest(Direction.RIGHT)),
        ("LEFT, 2: fog", ReplyRequest(Direction.LEFT, 2, "fog")),
        ("east", ReplyRequest(Direction.RIGHT)),
        ("right 3d render of a city", ReplyRequest(Direction.RIGHT, 1, "3d render of a city")),
        ("left 0", ReplyRequest(Direction.LEFT, 0)),  # parsed; the limits refuse it with a message
    ],
)
def test_parses_direction_times_and_prompt(text: str, expected: ReplyRequest) -> None:
    assert parse_reply(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "nice!", "leftover pizza", "<@123>", "2 left", "what about up?"])
def test_chat_is_not_a_request(text: str) -> None:
    assert parse_reply(text) is None


def test_strip_mentions_only_strips_leading_ones() -> None:
    assert strip_mentions("<@1> <@!2> left <@3>") == "left <@3>"

"""How the status message names the steps of a job, and how a long /queue fits one message."""

from __future__ import annotations

from bot import messages


def test_the_square_up_step_is_not_counted_as_an_expansion() -> None:
    # A plan of 3 steps for times=2: the square-up, then expansions 1/2 and 2/2.
    assert messages.expanded("➡ right ×2", 0, 3, 2, 64, 64) == (
        "🎨 ➡ right ×2: squared up to 64×64; the expansions come next."
    )
    assert messages.expanded("➡ right ×2", 1, 3, 2, 80, 64) == "🎨 ➡ right ×2: expansion 1/2 done (80×64)."
    assert messages.running("➡ right ×2", 2, 3, 2, 1, 2, None) == "🎨 ➡ right ×2: expansion 2/2 ▰▰▰▰▰▱▱▱▱▱"
    assert messages.running("➡ right ×2", 0, 3, 2, 2, 2, None).startswith(
        "🎨 ➡ right ×2: squaring the picture up first ▰▰▰▰▰▰▰▰▰▰"
    )


def test_without_a_square_up_every_step_is_an_expansion() -> None:
    assert messages.expanded("⬆ up ×1", 0, 1, 1, 64, 80) == "🎨 ⬆ up ×1: expansion 1/1 done (64×80)."
    assert messages.expanded("⬆ up ×1", 0, 2, 1, 64, 64) == (
        "🎨 ⬆ up ×1: squared up to 64×64; the expansion comes next."
    )


def test_a_long_queue_listing_fits_one_message() -> None:
    lines = [f"`job{n:02d}` " + "x" * 90 for n in range(40)]
    text = messages.listing(lines, "empty")
    shown = text.splitlines()
    assert len(text) <= messages.QUEUE_TEXT_LIMIT
    assert shown[-1] == f"… and {40 - (len(shown) - 1)} more." and shown[:-1] == lines[: len(shown) - 1]
    assert messages.listing(lines[:3], "empty") == "\n".join(lines[:3])
    assert messages.listing([], "empty") == "empty"


def test_the_help_fits_one_discord_message_at_the_largest_settings() -> None:
    text = messages.help_text(
        max_times=20, max_prompt_chars=100_000, max_user_jobs=1_000, cooldown_s=86_400.5,
        max_attachment_mb=1_000.5, max_canvas_side=100_000, default_expand=512, max_expand=4_096,
        max_guild_expansions_per_day=1_000_000, max_candidates=4,
    )  # fmt: skip
    assert len(text) <= 2000  # Discord refuses a longer message (error 50035)

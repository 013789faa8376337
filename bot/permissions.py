"""What the bot needs in a channel to show a job there, checked before anything is queued."""

from __future__ import annotations

import discord


def missing_for_results(permissions: discord.Permissions, *, in_thread: bool = False) -> list[str]:
    """The permissions (as Discord's settings name them) the bot lacks to show a job and post its
    result: see the channel, send (in threads: send in threads), attach the image, and read the
    history (replies, and finding a result again after a restart)."""
    if permissions.administrator:
        return []
    needed = {
        "View Channel": permissions.view_channel,
        "Send Messages in Threads" if in_thread else "Send Messages": (
            permissions.send_messages_in_threads if in_thread else permissions.send_messages
        ),
        "Attach Files": permissions.attach_files,
        "Read Message History": permissions.read_message_history,
    }
    return [name for name, granted in needed.items() if not granted]


def can_talk(permissions: discord.Permissions, *, in_thread: bool = False) -> bool:
    """Whether the bot may post a plain text message (to say what else it is missing)."""
    if permissions.administrator:
        return True
    send = permissions.send_messages_in_threads if in_thread else permissions.send_messages
    return permissions.view_channel and send

"""A submit that timed out but landed is found by the next try, not queued twice nor lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.jobs import JobService, Options, Requester, Source
from bot.limits import Limits
from bot.settings import BotSettings
from outpaint_engine.job import Direction, Job
from outpaint_engine.queue.base import QueueUnavailable
from outpaint_engine.queue.embedded import EmbeddedQueue
from outpaint_engine.settings import EngineSettings, QueueSettings
from tests.bot.conftest import png


class LandsButTimesOut(EmbeddedQueue):
    """A queue whose first ``outages`` submits store the job, then answer like a frozen Redis."""

    def __init__(self, settings: QueueSettings, outages: int) -> None:
        super().__init__(settings)
        self.outages = outages
        self.calls = 0

    async def submit(self, job: Job, source_png: bytes) -> Job:
        self.calls += 1
        if self.calls <= self.outages:
            if self.calls == 1:
                await super().submit(job, source_png)  # it lands...
            raise QueueUnavailable("The job queue did not answer in time.")  # ...but the answer is lost
        return await super().submit(job, source_png)


def service(queue: EmbeddedQueue) -> JobService:
    settings = BotSettings(_env_file=None, reconnect_max_s=0.01)
    return JobService(queue, settings, EngineSettings(_env_file=None, window=64), Limits(settings))


def source() -> Source:
    return Source(png(96, 64), 96, 64, continue_canvas=False)


WHO = Requester(user_id=1, guild_id=10, channel_id=100)


async def test_a_submit_that_landed_during_an_outage_is_followed_once(tmp_path: Path) -> None:
    settings = QueueSettings(_env_file=None, data_dir=tmp_path)
    async with LandsButTimesOut(settings, outages=2) as queue:
        job = await service(queue).submit(WHO, source(), Options(Direction.RIGHT), "slash")
        assert queue.calls == 3  # two lost answers, then the queue says it has the job
        assert [j.id for j in await queue.list_jobs()] == [job.id]


async def test_a_queue_that_stays_unreachable_is_reported(tmp_path: Path) -> None:
    settings = QueueSettings(_env_file=None, data_dir=tmp_path)
    async with LandsButTimesOut(settings, outages=10) as queue:
        with pytest.raises(QueueUnavailable):
            await service(queue).submit(WHO, source(), Options(Direction.RIGHT), "slash")
        assert queue.calls == 4

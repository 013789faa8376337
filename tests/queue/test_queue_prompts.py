"""The auto prompt, against both backends: a job without a prompt is captioned once, before its
first expansion, by its worker's captioner; the prompt (or why there is none) is stored with the job
and published as ``Prompted``; a retry reuses it. The worker runs the fast engine double with a
captioner (``captioning_harness``): what matters here is what it was asked and ran with. The last
test kills a real ``outpaint-worker`` process after it captioned."""

from __future__ import annotations

from pathlib import Path

from conftest import AUTO_PROMPT, WITHHELD_WORD
from engine_double import CAPTION_ENV, FastEngineDouble
from processes import DOUBLE, Follower, Processes, assert_complete_once, expanded, story
from queue_helpers import SOURCE_PNG, Harness, RedisServer, collect, make_job, queue_settings

from outpaint_engine.captioner import Caption
from outpaint_engine.job import AutoPrompt, CancelToken, Event, JobSpec, JobState, Progress, Prompted
from outpaint_engine.queue.redis import RedisQueue
from outpaint_engine.worker.loop import WITHHELD


def kinds(events: list[tuple[int, Event]]) -> list[str]:
    return [e.kind for _, e in events if not isinstance(e, Progress)]


def prompted(events: list[tuple[int, Event]]) -> list[Prompted]:
    return [e for _, e in events if isinstance(e, Prompted)]


async def test_a_job_without_a_prompt_is_captioned_once_and_a_retry_reuses_the_prompt(
    captioning_harness: Harness,
) -> None:
    h = captioning_harness
    engine = h.engine
    assert isinstance(engine, FastEngineDouble)
    failed = []

    def fail_once_in_step_1(spec: JobSpec, step: int, denoise: int, cancel: CancelToken | None) -> None:
        if step == 1 and not failed:
            failed.append(step)
            raise RuntimeError("a GPU hiccup")

    engine.hook = fail_once_in_step_1
    job = make_job(1, times=2)  # no prompt; the worker fails once after step 0, and is retried
    await h.queue.submit(job, SOURCE_PNG)
    events = await collect(h.queue, job.id)

    assert kinds(events) == [
        "queued", "started", "prompted", "expanded", "started", "expanded", "expanded", "done"
    ]  # fmt: skip
    assert prompted(events) == [Prompted(job.id, AUTO_PROMPT, None)]
    assert engine.captions == ["right"]  # once, told the side that grows
    assert engine.prompts == [AUTO_PROMPT, AUTO_PROMPT]  # both deliveries ran with it
    assert engine.runs == [(1, 0), (1, 1)]
    stored = await h.queue.get(job.id)
    assert stored is not None and stored.state is JobState.DONE
    assert stored.auto_prompt == AutoPrompt(AUTO_PROMPT)
    assert (stored.spec.prompt, stored.prompt_in_use) == ("", AUTO_PROMPT)

    given = make_job(2, times=1, prompt="a red barn")  # a prompt of the user's: never captioned
    await h.queue.submit(given, SOURCE_PNG)
    assert prompted(await collect(h.queue, given.id)) == []
    assert engine.captions == ["right"] and engine.prompts[-1] == "a red barn"
    stored = await h.queue.get(given.id)
    assert stored is not None and stored.auto_prompt is None and stored.prompt_in_use == "a red barn"


async def test_no_auto_prompt_is_stored_with_its_reason_and_the_job_runs_without_one(
    captioning_harness: Harness,
) -> None:
    h = captioning_harness
    engine = h.engine
    cases = [
        (Caption("", "the captioner timed out"), AutoPrompt("", "the captioner timed out")),
        (Caption(f"a {WITHHELD_WORD.upper()} scene"), AutoPrompt("", WITHHELD)),  # the word list
    ]
    for seed, (caption, expected) in enumerate(cases, start=3):
        engine.captioner = caption
        job = make_job(seed, times=1)
        await h.queue.submit(job, SOURCE_PNG)
        events = await collect(h.queue, job.id)
        assert prompted(events) == [Prompted(job.id, "", expected.reason)]
        assert kinds(events)[-1] == "done"
        stored = await h.queue.get(job.id)
        assert stored is not None and stored.auto_prompt == expected and stored.prompt_in_use == ""
    assert engine.prompts == ["", ""]  # run as they are, and not captioned again inside the engine
    assert len(engine.captions) == 2


async def test_a_worker_killed_after_captioning_leaves_the_prompt_to_the_next_one(
    redis_server: RedisServer, processes: Processes, tmp_path: Path
) -> None:
    # Real ``outpaint-worker`` processes on the fast engine double with a captioner: each finishes
    # the first expansion it starts and waits in the next one, where the test kills it.
    captioner = {CAPTION_ENV: AUTO_PROMPT}
    workers = {
        name: processes.worker(redis_server.url, name, engine=DOUBLE, one_step=True, **captioner)
        for name in ("w0", "w1")
    }
    for name, process in workers.items():
        await processes.serving(process, name)
    async with RedisQueue(queue_settings(redis_server.url, tmp_path)) as queue:
        job = make_job(5, times=1)  # 2 steps, no prompt
        await queue.submit(job, SOURCE_PNG)
        follower = Follower(queue, job.id)
        await follower.until(lambda: expanded(follower.seen) == 1, "expansion 0")
        ((first, _),) = processes.steps_by_pid(5)
        next(p for p in workers.values() if p.pid == first).kill()
        events = await follower.result()

        assert_complete_once(events, total=2)
        assert story(events).count("started") == 2 and prompted(events) == [Prompted(job.id, AUTO_PROMPT)]
        records = processes.records()
        assert [r["pid"] for r in records if "caption" in r] == [first]  # one caption, by the first
        runs = [(r["resume"], r["prompt"]) for r in records if r["seed"] == 5 and "resume" in r]
        assert runs == [(0, AUTO_PROMPT), (1, AUTO_PROMPT)]  # the second read it from the job
        stored = await queue.get(job.id)
        assert stored is not None and stored.auto_prompt == AutoPrompt(AUTO_PROMPT)

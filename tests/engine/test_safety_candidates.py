"""The content check of a step generated as several candidates: each is checked on its own; where
the policy blocks, flagged ones are withheld (the job fails only when all are); where it
spoilers, only the flagged ones are marked; and what the worker stores for such a step."""

from __future__ import annotations

import numpy as np
import pytest

from outpaint_engine.api import StepResult
from outpaint_engine.imageio import decode_png, encode_png
from outpaint_engine.job import Audience, Direction, Job, JobSpec
from outpaint_engine.safety import ContentBlocked, SafetyCheck, SafetySettings, is_flagged, mark_flagged
from outpaint_engine.worker.loop import _stored_pngs

UNSAFE = 200
"""A candidate whose first pixel is this value counts as flagged for the stub classifier."""


def candidates(*first_pixels: int) -> tuple[np.ndarray, ...]:
    out = []
    for value in first_pixels:
        canvas = np.zeros((8, 12, 3), np.uint8)
        canvas[0, 0] = value
        out.append(canvas)
    return tuple(out)


def check(monkeypatch: pytest.MonkeyPatch, calls: list[int], **policies: str) -> SafetyCheck:
    """A check whose classifier flags the canvases whose first pixel is UNSAFE."""
    safety = SafetyCheck(SafetySettings(_env_file=None, safety_model="a classifier", **policies))

    def flags(canvas: np.ndarray) -> float | None:
        calls.append(int(canvas[0, 0, 0]))
        return 0.9 if canvas[0, 0, 0] == UNSAFE else None

    monkeypatch.setattr(safety, "flags", flags)
    return safety


def job(audience: Audience = Audience.GENERAL) -> Job:
    return Job("j1", 1, 2, 3, JobSpec(Direction.RIGHT, candidates=3), "sha", audience=audience)


def test_block_withholds_the_flagged_candidates_and_fails_only_when_all_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    review = check(monkeypatch, calls).review(job(), None)  # an ordinary channel: block
    shown = review.check_candidates(candidates(UNSAFE, 1, 2), 3)
    assert [(int(c[0, 0, 0]), flagged) for c, flagged in shown] == [(1, False), (2, False)]
    assert calls == [UNSAFE, 1, 2] and not review.flagged
    with pytest.raises(ContentBlocked):
        review.check_candidates(candidates(UNSAFE, UNSAFE), 3)


def test_spoiler_marks_only_the_flagged_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    review = check(monkeypatch, calls, safety_age_restricted_policy="spoiler").review(
        job(Audience.AGE_RESTRICTED), None
    )
    canvases = candidates(1, UNSAFE, 2)
    pngs = _stored_pngs(review, StepResult(0, 1, canvases[0], canvases))
    assert [is_flagged(png) for png in pngs] == [False, True, False]
    assert [int(decode_png(png)[0, 0, 0]) for png in pngs] == [1, UNSAFE, 2]
    assert review.flagged  # the job is flagged (no more previews), not its clean candidates


def test_a_job_flagged_before_has_every_candidate_flagged_and_allow_checks_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    safety = check(monkeypatch, calls, safety_policy="spoiler")
    flagged_source = mark_flagged(encode_png(candidates(1)[0]))
    review = safety.review(job(), flagged_source)
    assert [flagged for _, flagged in review.check_candidates(candidates(1, 2), 0)] == [True, True]
    allowing = check(monkeypatch, calls, safety_age_restricted_policy="allow").review(
        job(Audience.PRIVATE), None
    )
    assert [flagged for _, flagged in allowing.check_candidates(candidates(UNSAFE, 2), 0)] == [False, False]
    assert calls == []  # neither asked the classifier

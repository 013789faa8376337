"""The content check's parts: settings, the flag in the PNG, tiles, the classifier (a tiny ViT
through the real transformers pipeline), the per-job review, and the word list."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from outpaint_engine.imageio import decode_png, encode_png
from outpaint_engine.job import Audience, Direction, Job, JobSpec
from outpaint_engine.safety import (
    BLOCKED,
    MAX_TILES,
    ContentBlocked,
    ImageClassifier,
    Policy,
    SafetyCheck,
    SafetyModelError,
    SafetySettings,
    WordList,
    is_block_reason,
    is_flagged,
    mark_flagged,
    tiles,
)
from outpaint_engine.settings import describe_setting_error

UNSAFE_LABELS = ["nsfw", "porn", "hentai"]


def settings(**values: object) -> SafetySettings:
    return SafetySettings(_env_file=None, **values)


def canvas(width: int = 96, height: int = 64) -> np.ndarray:
    rng = np.random.default_rng(width + height)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def job(audience: Audience = Audience.GENERAL) -> Job:
    return Job("j1", 1, 2, 3, JobSpec(Direction.RIGHT), "sha", audience=audience)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = settings()
    assert (default.safety_model, default.safety_policy, default.blocked_words) == ("", Policy.BLOCK, [])
    words = tmp_path / "words.txt"
    words.write_text("one\n")
    monkeypatch.setenv("OUTPAINT_SAFETY_MODEL", "some/detector")
    monkeypatch.setenv("OUTPAINT_SAFETY_LABELS", "NSFW, porn ,")
    monkeypatch.setenv("OUTPAINT_SAFETY_POLICY", "spoiler")
    monkeypatch.setenv("OUTPAINT_BLOCKED_WORDS", "gore, blood bath")
    monkeypatch.setenv("OUTPAINT_BLOCKED_WORDS_FILE", str(words))
    s = SafetySettings(_env_file=None)
    assert (s.safety_model, s.safety_labels, s.safety_threshold) == ("some/detector", ["NSFW", "porn"], 0.5)
    assert [s.policy_for(a) for a in Audience] == [Policy.SPOILER, Policy.ALLOW, Policy.ALLOW]
    assert (s.blocked_words, s.blocked_words_file) == (["gore", "blood bath"], words)

    monkeypatch.setenv("OUTPAINT_SAFETY_AGE_RESTRICTED_POLICY", "hide")
    with pytest.raises(ValidationError) as bad:
        SafetySettings(_env_file=None)
    assert describe_setting_error(bad.value).startswith("bad setting OUTPAINT_SAFETY_AGE_RESTRICTED_POLICY:")
    monkeypatch.delenv("OUTPAINT_SAFETY_AGE_RESTRICTED_POLICY")
    monkeypatch.setenv("OUTPAINT_BLOCKED_WORDS_FILE", str(tmp_path / "missing.txt"))
    with pytest.raises(ValidationError) as missing:
        SafetySettings(_env_file=None)
    assert describe_setting_error(missing.value).startswith("bad setting OUTPAINT_BLOCKED_WORDS_FILE:")


def test_the_flag_travels_inside_the_png_and_leaves_the_pixels_alone() -> None:
    pixels = canvas()
    png = encode_png(pixels, compress_level=1)
    marked = mark_flagged(png)
    assert not is_flagged(png) and is_flagged(marked)
    assert mark_flagged(marked) == marked
    assert np.array_equal(decode_png(marked), pixels)
    with Image.open(io.BytesIO(marked)) as image:
        assert image.info["outpaint-safety"] == "flagged"
    assert not is_flagged(None) and not is_flagged(b"not a png") and not is_flagged(marked[:20])
    assert is_block_reason(BLOCKED) and not is_block_reason("something else")


@pytest.mark.parametrize(
    ("width", "height", "count", "size"),
    [(64, 64, 1, 64), (200, 64, 4, 64), (64, 150, 3, 64), (64 * 40, 64, MAX_TILES, 160)],
)
def test_tiles_cover_the_canvas_along_its_long_side(width: int, height: int, count: int, size: int) -> None:
    image = canvas(width, height)
    found = tiles(image)
    assert len(found) == count
    covered = np.zeros(max(width, height), bool)
    for tile in found:
        short, long = sorted(tile.shape[:2])
        assert (short, long) == (min(width, height), size)
    starts = (
        [0] if count == 1 else [round(i * (max(width, height) - size) / (count - 1)) for i in range(count)]
    )
    for start in starts:
        covered[start : start + size] = True
    assert covered.all()
    assert np.array_equal(found[-1], image[:, -size:] if width >= height else image[-size:])


def test_the_classifier_sums_the_unsafe_labels(tiny_classifiers: dict[str, Path]) -> None:
    mixed = ImageClassifier.load(str(tiny_classifiers["mixed"]), "cpu", UNSAFE_LABELS)
    assert mixed.score(canvas(200, 64)) == pytest.approx(0.6, abs=1e-4)  # porn 0.3 + hentai 0.3
    only_porn = ImageClassifier.load(str(tiny_classifiers["mixed"]), "cpu", ["PORN"])
    assert only_porn.score(canvas()) == pytest.approx(0.3, abs=1e-4)
    unsafe = ImageClassifier.load(str(tiny_classifiers["unsafe"]), "cpu", UNSAFE_LABELS)
    assert unsafe.score(canvas()) == pytest.approx(0.99, abs=1e-4)


def test_a_classifier_that_cannot_be_used_says_why_in_one_line(tiny_classifiers: dict[str, Path]) -> None:
    with pytest.raises(SafetyModelError) as wrong_labels:
        ImageClassifier.load(str(tiny_classifiers["safe"]), "cpu", ["porn", "gore"])
    assert str(wrong_labels.value).endswith("its labels are: normal, nsfw")
    with pytest.raises(SafetyModelError) as missing:
        ImageClassifier.load(str(tiny_classifiers["safe"].parent / "nothing-here"), "cpu", UNSAFE_LABELS)
    assert "could not load the safety classifier" in str(missing.value)
    assert "\n" not in str(missing.value)


def loaded(tiny_classifiers: dict[str, Path], name: str, **values: object) -> SafetyCheck:
    check = SafetyCheck(settings(safety_model=str(tiny_classifiers[name]), **values))
    check.load("cpu")
    return check


def test_the_review_of_a_job_follows_the_policy_of_its_audience(tiny_classifiers: dict[str, Path]) -> None:
    check = loaded(tiny_classifiers, "unsafe", safety_policy="block", safety_age_restricted_policy="spoiler")
    png = encode_png(canvas())

    blocking = check.review(job(Audience.GENERAL), png)
    with pytest.raises(ContentBlocked) as blocked:
        blocking.check(canvas(), 0)
    assert str(blocked.value) == BLOCKED

    for audience in (Audience.AGE_RESTRICTED, Audience.PRIVATE):
        spoiler = check.review(job(audience), png)
        assert not spoiler.flagged and spoiler.stamp(png) == png
        spoiler.check(canvas(), 0)
        assert spoiler.flagged and is_flagged(spoiler.stamp(png))

    allowing = loaded(tiny_classifiers, "unsafe", safety_age_restricted_policy="allow")
    review = allowing.review(job(Audience.AGE_RESTRICTED), mark_flagged(png))
    review.check(canvas(), 0)
    assert not review.flagged and review.stamp(png) == png

    below = loaded(tiny_classifiers, "mixed", safety_threshold=0.7).review(job(), png)
    below.check(canvas(), 0)  # 0.6 < 0.7
    assert not below.flagged


def test_a_flag_from_the_source_or_checkpoint_is_kept(tiny_classifiers: dict[str, Path]) -> None:
    png = encode_png(canvas())
    spoiler = loaded(tiny_classifiers, "safe", safety_policy="spoiler")
    review = spoiler.review(job(), png, mark_flagged(png))
    review.check_start()
    review.check(canvas(), 1)  # the classifier now says safe: the flag stays
    assert review.flagged and is_flagged(review.stamp(png))

    blocking = loaded(tiny_classifiers, "safe", safety_policy="block")
    with pytest.raises(ContentBlocked):
        blocking.review(job(), mark_flagged(png), None).check_start()
    blocking.review(job(), png, None).check_start()  # nothing flagged: goes on


def test_without_a_model_nothing_is_checked() -> None:
    off = SafetyCheck()
    off.load("cpu")
    review = off.review(job(), None)
    review.check(canvas(), 0)
    assert not off.enabled and not review.flagged
    assert not SafetyCheck(settings()).enabled


def test_the_word_list_matches_whole_words_phrases_and_endings() -> None:
    words = WordList(["Gore", "blood bath", "nud*", "  ", "!!"])
    assert words.find("lots of GORE here") == "Gore"
    assert words.find("a Blood-Bath, at dawn") == "blood bath"
    assert words.find("bloodbath") is None  # one word, not the phrase
    assert words.find("nudity on the beach") == "nud*"
    assert words.find("gorge, gored") is None  # whole words only
    assert words.find("ｇｏｒｅ") == "Gore"  # full-width letters
    assert words.find("go\u200bre") == "Gore"  # a zero-width space inside
    assert words.allows("a misty forest") and WordList().allows("gore")


def test_the_word_file_is_read_again_when_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# the operator's list\nspider  # arachnids\n\n")
    words = WordList.from_settings(settings(blocked_words="gore", blocked_words_file=path))
    assert words.find("a spider web") == "spider" and words.find("gore") == "gore"
    path.write_text("snake\n")
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    assert words.find("a spider web") is None and words.find("a snake") == "snake"
    path.unlink()
    with caplog.at_level(logging.WARNING, "outpaint.safety"):
        assert words.find("a snake") == "snake"  # the words read before are kept
        assert words.find("a snake") == "snake"
    assert len([r for r in caplog.records if "could not read the word list" in r.message]) == 1

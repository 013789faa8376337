"""The ``outpaint`` command: end to end in a subprocess, error paths in process."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import outpaint_engine.queue
from outpaint_engine import cli
from outpaint_engine.grid import grid_shape
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.plan import plan_job
from tests.conftest import TINY_STEPS, TINY_WINDOW

REPO = Path(__file__).resolve().parents[2]


def _write_photo(path: Path, width: int, height: int) -> Path:
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 90)], axis=-1)
    Image.fromarray(np.clip(pixels + rng.normal(0, 10, pixels.shape), 0, 255).astype(np.uint8)).save(path)
    return path


def _tiny_args(model: Path, ip_adapter: Path, *, expand: bool = True) -> list[str]:
    """The tiny models on the CPU (with a 16-px ``--expand`` unless the job plans its own)."""
    args = ["--model", str(model), "--ip-adapter", str(ip_adapter), "--device", "cpu"]
    args += ["--size", str(TINY_WINDOW), "--steps", str(TINY_STEPS)]
    return args + (["--expand", "16"] if expand else [])


def _outpaint(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "outpaint_engine.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _assert_one_line_error(stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("outpaint: error: ")
    assert "Traceback" not in stderr


def test_extends_a_non_square_photo_and_saves_every_step(
    tmp_path: Path, tiny_model_dir: Path, tiny_ip_adapter_dir: Path
) -> None:
    photo = _write_photo(tmp_path / "photo.png", 72, 96)  # portrait: squared up, then 2 expansions
    steps_dir = tmp_path / "steps"
    run = _outpaint(
        str(photo),
        "--direction",
        "right",
        "--times",
        "2",
        "--seed",
        "11",
        "-o",
        "wide.png",
        "--save-steps",
        str(steps_dir),
        *_tiny_args(tiny_model_dir, tiny_ip_adapter_dir),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    spec = JobSpec(direction=Direction.RIGHT, times=2, expand_px=16, window=TINY_WINDOW, steps=TINY_STEPS)
    plan = plan_job(72, 96, spec)
    assert plan.total_steps == 3
    with Image.open(tmp_path / "wide.png") as result:
        assert result.size == plan.final_size
    saved = sorted(steps_dir.iterdir())
    assert [p.name for p in saved] == ["step-01.png", "step-02.png", "step-03.png"]
    for path, step in zip(saved, plan.steps, strict=True):
        with Image.open(path) as image:
            assert image.size == step.size_after
    assert "Traceback" not in run.stderr
    assert "seed" not in run.stderr  # only printed when chosen at random


def test_not_an_image_fails_with_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is not a picture")
    run = _outpaint(str(bogus), "--times", "1", cwd=tmp_path)
    assert run.returncode != 0
    _assert_one_line_error(run.stderr)
    assert run.stdout == ""


def test_a_truncated_image_fails_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = _write_photo(tmp_path / "photo.png", 96, 96)
    data = photo.read_bytes()
    photo.write_bytes(data[: len(data) // 2])
    assert cli.main([str(photo)]) == 1
    _assert_one_line_error(capsys.readouterr().err)


def test_an_extreme_panorama_fails_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = _write_photo(tmp_path / "strip.png", 1200, 64)
    assert cli.main([str(photo)]) == 1
    _assert_one_line_error(capsys.readouterr().err)


def test_a_missing_file_fails_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([str(tmp_path / "nothing.png")]) == 1
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert "nothing.png" in err


@pytest.mark.parametrize(
    "args",
    [
        ["--direction", "sideways"],
        ["--times", "many"],
        ["--expand", "12"],
        ["--size", "100"],
        ["-o", "out.unknownformat"],
    ],
    ids=["direction", "times", "expand", "size", "output-format"],
)
def test_bad_options_fail_with_one_line(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = _write_photo(tmp_path / "photo.png", 96, 96)
    with pytest.raises(SystemExit) as exit_info:
        status = cli.main([str(photo), *args])
        raise SystemExit(status)
    assert exit_info.value.code != 0
    _assert_one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["-o", "missing/out.png"], "missing is not a folder"),
        (["-o", "out.psd"], "as PSD is not supported"),  # Pillow reads PSD but cannot write it
        (["-o", "out.xbm"], "as XBM is not supported"),  # one-bit only
        (["-o", "taken.png"], "it is a folder"),
        (["--save-steps", "photo.png"], "photo.png: it is not a folder"),
        (["--save-steps", "photo.png/steps"], "cannot make the folder"),
    ],
    ids=["output-folder-missing", "output-read-only-format", "output-not-rgb", "output-is-a-folder",
         "save-steps-is-a-file", "save-steps-under-a-file"],
)  # fmt: skip
def test_unwritable_paths_fail_before_the_model_loads(
    args: list[str],
    reason: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_photo(tmp_path / "photo.png", 96, 96)
    (tmp_path / "taken.png").mkdir()
    assert cli.main(["photo.png", *args, "--model", str(tmp_path / "no-model")]) == 1
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert reason in err  # not the missing model: the paths are checked first


def test_a_folder_given_as_input_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert str(tmp_path) in err


def test_a_model_missing_offline_fails_with_one_line(
    tmp_path: Path, tiny_ip_adapter_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = _write_photo(tmp_path / "photo.png", 96, 96)
    args = [
        str(photo),
        "--model",
        "nobody-here/no-such-model",
        "-o",
        str(tmp_path / "o.png"),
        "--device",
        "cpu",
    ]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert "nobody-here/no-such-model" in err
    assert not (tmp_path / "o.png").exists()


def test_the_engine_is_loaded_for_the_jobs_window_and_guidance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from outpaint_engine.models import ModelLoadError
    from outpaint_engine.runner import Outpainter

    loaded: list[dict[str, object]] = []

    def load(_settings: object, **overrides: object) -> Outpainter:
        loaded.append(overrides)
        raise ModelLoadError("stop here")

    monkeypatch.setattr(Outpainter, "load", load)
    photo = _write_photo(tmp_path / "photo.png", 96, 96)
    args = [
        str(photo),
        "-o",
        str(tmp_path / "o.png"),
        "--size",
        "128",
        "--expand",
        "32",
        "--guidance",
        "1",
        "--compile",
        "default",
    ]
    assert cli.main(args) == 1
    assert "stop here" in capsys.readouterr().err
    (overrides,) = loaded
    assert (overrides["window"], overrides["guidance"], overrides["compile"]) == (128, 1.0, "default")
    assert overrides["batch_jobs"] == 1  # one job: nothing to batch, no batch sizes to warm up
    loaded.clear()
    assert cli.main([*args[:-2], "--device", "cpu"]) == 1
    assert loaded[0]["compile"] == "off"  # no compiler unless asked (CUDA graphs where they apply)
    capsys.readouterr()


def test_a_random_seed_is_printed_and_reproduces_the_result(
    tmp_path: Path, tiny_model_dir: Path, tiny_ip_adapter_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = _write_photo(tmp_path / "photo.png", 64, 64)
    tiny = _tiny_args(tiny_model_dir, tiny_ip_adapter_dir)
    assert cli.main([str(photo), "-o", str(tmp_path / "a.png"), *tiny]) == 0
    err = capsys.readouterr().err
    seed = next(line.split()[-1] for line in err.splitlines() if line.startswith("outpaint: seed "))
    assert cli.main([str(photo), "-o", str(tmp_path / "b.png"), "--seed", seed, *tiny]) == 0
    a, b = (np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png"))
    assert a.shape == (64, 80, 3)
    np.testing.assert_array_equal(a, b)


def test_continue_keeps_the_pixels_of_an_earlier_result(
    tmp_path: Path, tiny_model_dir: Path, tiny_ip_adapter_dir: Path
) -> None:
    photo = _write_photo(tmp_path / "wide.png", 160, 64)
    tiny = _tiny_args(tiny_model_dir, tiny_ip_adapter_dir)
    out = tmp_path / "taller.png"
    assert (
        cli.main([str(photo), "--continue", "--direction", "down", "--seed", "1", "-o", str(out), *tiny]) == 0
    )
    result = np.asarray(Image.open(out))
    assert result.shape == (80, 160, 3)
    np.testing.assert_array_equal(result[:16], np.asarray(Image.open(photo))[:16])  # above the window


def test_queue_subcommand_is_delegated(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    admin = types.ModuleType("outpaint_engine.queue.admin")
    admin.main = lambda argv: calls.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "outpaint_engine.queue.admin", admin)
    monkeypatch.setattr(outpaint_engine.queue, "admin", admin, raising=False)
    assert cli.main(["queue", "list", "--all"]) == 7
    assert calls == [["list", "--all"]]


def test_candidates_of_an_aspect_target_are_written_with_their_grid(
    tmp_path: Path, tiny_model_dir: Path, tiny_ip_adapter_dir: Path
) -> None:
    photo = _write_photo(tmp_path / "photo.png", 64, 64)
    run = _outpaint(
        str(photo),
        "--aspect",
        "16:9",
        "--candidates",
        "3",
        "--seed",
        "5",
        "-o",
        "pick.png",
        *_tiny_args(tiny_model_dir, tiny_ip_adapter_dir, expand=False),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    plan = plan_job(64, 64, JobSpec(Direction.RIGHT, aspect="16:9", window=TINY_WINDOW, candidates=3))
    assert "outpaint: plan: 1 expansion left, 1 right → 16:9, 3 candidates" in run.stderr
    names = ["pick-1.png", "pick-2.png", "pick-3.png"]
    assert (
        f"wrote {', '.join(names)} ({plan.final_size[0]}×{plan.final_size[1]}) and their grid pick.png"
        in (run.stderr)
    )
    candidates = [np.asarray(Image.open(tmp_path / name)) for name in names]
    assert all(c.shape[1::-1] == plan.final_size for c in candidates)
    assert not np.array_equal(candidates[0], candidates[1])
    grid = np.asarray(Image.open(tmp_path / "pick.png"))
    width, height = plan.final_size
    assert grid_shape(3, width, height) == (2, 2)
    assert grid.shape[0] > 2 * height and grid.shape[1] > 2 * width  # two rows of two, with gaps
    corner = (slice(height // 2, height), slice(width // 2, width))  # of the first cell, past its badge
    np.testing.assert_array_equal(grid[corner], candidates[0][corner])


def test_zoom_out_grows_every_side_around_the_photo(
    tmp_path: Path, tiny_model_dir: Path, tiny_ip_adapter_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = _write_photo(tmp_path / "photo.png", 64, 64)
    out = tmp_path / "wide.png"
    tiny = _tiny_args(tiny_model_dir, tiny_ip_adapter_dir, expand=False)
    assert (
        cli.main([str(photo), "--direction", "all", "--zoom", "1.5", "--seed", "2", "-o", str(out), *tiny])
        == 0
    )
    assert "plan: 1 expansion left, 1 right, 1 up, 1 down → 1.5× zoom (96×96)" in capsys.readouterr().err
    result = np.asarray(Image.open(out))
    assert result.shape == (96, 96, 3)
    np.testing.assert_array_equal(result[40:56, 40:56], np.asarray(Image.open(photo))[24:40, 24:40])


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--zoom", "9"], "zoom must be between 1.1 and 4"),
        (["--zoom", "big"], "argument --zoom: invalid float value"),
        (["--direction", "left", "--zoom", "2"], "--zoom grows every side"),
        (["--direction", "all", "--aspect", "16:9"], "not both"),
        (["--aspect", "16:9", "--direction", "up"], "leave out --direction"),
        (["--aspect", "16:9", "--times", "2"], "--times and --expand go with one --direction"),
        (["--zoom", "2", "--expand", "64"], "--times and --expand go with one --direction"),
        (["--aspect", "wide"], "'wide' is not an aspect ratio"),
        (["--aspect", "9:1"], "9:1 is too extreme"),
        (["--aspect", "1:1"], "already 1:1"),
        (["--candidates", "7"], "candidates must be between 1 and 4"),
        (["--candidates", "two"], "argument --candidates: invalid int value"),
    ],
    ids=["zoom-range", "zoom-text", "zoom-with-a-side", "zoom-and-aspect", "aspect-with-a-side",
         "aspect-with-times", "zoom-with-expand", "aspect-text", "aspect-extreme", "aspect-already",
         "candidates-range", "candidates-text"],
)  # fmt: skip
def test_bad_zoom_aspect_and_candidates_fail_with_one_line(
    args: list[str], reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = _write_photo(tmp_path / "photo.png", 96, 96)
    try:
        status = cli.main([str(photo), *args, "--model", str(tmp_path / "no-model")])
    except SystemExit as exit_info:  # argparse's own errors
        status = exit_info.code
    assert status != 0
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert reason in err  # not the missing model: the request is checked first


def test_help_documents_zoom_aspect_and_candidates(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--zoom Z", "--aspect W:H", "--candidates N", "{left,right,up,down,all}", "16:9", "grid"):
        assert needle in text

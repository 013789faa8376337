"""``outpaint``: extend an image from the command line.

    outpaint photo.jpg --direction right --times 3 -o wide.png
    outpaint photo.jpg --direction all --zoom 1.5          # every side, around the photo
    outpaint photo.jpg --aspect 16:9 --candidates 4        # a grid and four files to pick from

Errors are one line (``outpaint: error: <reason>``) with a non-zero exit status; a progress bar is
shown on a terminal only. ``outpaint queue ...`` runs the queue administration commands.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np
from pydantic import ValidationError

from outpaint_engine.api import StepProgress, StepResult
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.observability.logs import setup_logging
from outpaint_engine.plan import ASPECT_PRESETS, MAX_CANDIDATES, ZOOM_RANGE, Plan, PlanError, plan_job
from outpaint_engine.settings import EngineSettings, OpsSettings, describe_setting_error

if TYPE_CHECKING:
    from outpaint_engine.runner import Outpainter

PROG = "outpaint"
AUTO_PROMPT = "auto"
ALL = "all"
DEFAULT_ZOOM = 1.5
DEFAULT_TIMES = 1
DEFAULT_EXPAND = 256


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser(settings: EngineSettings) -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Extend an image with SDXL differential-diffusion outpainting.")
    p.add_argument("input", type=Path, help="the image to extend (PNG, JPEG, WebP or GIF)")
    p.add_argument(
        "-o", "--output", type=Path, help="where to write the result (default: INPUT-outpaint.png)"
    )
    low, high = ZOOM_RANGE
    p.add_argument(
        "-d",
        "--direction",
        choices=[*(d.value for d in Direction), ALL],
        help=f"the side to grow (default: right); {ALL}: every side (a zoom out, see --zoom)",
    )
    p.add_argument(
        "-t", "--times", type=int, help=f"expansions towards --direction (default: {DEFAULT_TIMES})"
    )
    p.add_argument(
        "--expand",
        type=int,
        help=f"pixels added per expansion towards --direction (default: {DEFAULT_EXPAND})",
    )
    p.add_argument(
        "--zoom",
        type=float,
        metavar="Z",
        help=f"grow every side so the canvas becomes Z times wider and taller around the image "
        f"({low:g} to {high:g}; default {DEFAULT_ZOOM:g} with --direction {ALL})",
    )
    p.add_argument(
        "--aspect",
        metavar="W:H",
        help=f"grow two opposite sides evenly to this aspect ratio ({', '.join(ASPECT_PRESETS)} or any W:H)",
    )
    p.add_argument(
        "--candidates",
        type=int,
        default=1,
        metavar="N",
        help=f"generate the last expansion N times with different noise (1 to {MAX_CANDIDATES}): OUTPUT "
        "gets a numbered grid of them and OUTPUT-1, OUTPUT-2... each candidate",
    )
    p.add_argument(
        "-p",
        "--prompt",
        default="",
        help="what the new area shows (default: none; 'auto': the captioner writes it, printed)",
    )
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    p.add_argument("--steps", type=int, default=settings.steps, help="denoising steps per window")
    p.add_argument("--guidance", type=float, default=settings.guidance, help="classifier-free guidance scale")
    p.add_argument(
        "--size", type=int, default=settings.window, help="generation window in px (multiple of 64)"
    )
    p.add_argument(
        "--model", default=settings.model, help="SDXL hub id, diffusers folder or .safetensors file"
    )
    p.add_argument(
        "--ip-adapter", default=settings.ip_adapter, help="IP-Adapter hub id or folder (h94 layout)"
    )
    p.add_argument("--no-ip-adapter", action="store_true", help="run without the IP-Adapter image prompt")
    p.add_argument("--ip-scale", type=float, default=settings.ip_scale, help="IP-Adapter strength")
    p.add_argument(
        "--captioner",
        default=settings.captioner,
        metavar="MODEL",
        help="what writes the prompt when --prompt is empty or 'auto': a local vision-language model "
        "(hub id or folder) or 'openai' (the server of OUTPAINT_CAPTIONER_URL, see docs/captioner.md)",
    )
    p.add_argument("--device", default=settings.device, help="auto, cuda, cuda:N, mps or cpu")
    p.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"], default=settings.dtype)
    p.add_argument(
        "--low-vram", action="store_true", default=settings.low_vram, help="offload models to the CPU"
    )
    p.add_argument(
        "--compile",
        choices=["off", "graphs", "regional", "default", "reduce-overhead"],
        help="how the UNet runs on CUDA (default: graphs, CUDA graphs of the eager kernels, ready in "
        "seconds; regional / reduce-overhead compile first: a minute or more from an empty cache, "
        "worth it for many expansions; see docs/engine.md)",
    )
    p.add_argument(
        "--save-steps",
        type=Path,
        metavar="DIR",
        help="also write the canvas after every expansion, as DIR/step-01.png, step-02.png... "
        "(of the last, the first candidate)",
    )
    p.add_argument(
        "--continue",
        dest="continue_canvas",
        action="store_true",
        help="INPUT is an earlier result: keep its pixels instead of resizing it",
    )
    return p


def _growth(args: argparse.Namespace) -> dict[str, object]:
    """The JobSpec fields that say how the canvas grows, from options that must agree."""
    zooming = args.zoom is not None or args.direction == ALL
    if zooming and args.aspect is not None:
        raise CliError("choose --zoom (--direction all) or --aspect, not both")
    if zooming and args.direction not in (None, ALL):
        raise CliError(f"--zoom grows every side: use it alone or with --direction {ALL}")
    if args.aspect is not None and args.direction is not None:
        raise CliError("--aspect chooses the sides to grow: leave out --direction")
    if (zooming or args.aspect is not None) and (args.times is not None or args.expand is not None):
        raise CliError("--times and --expand go with one --direction; --zoom and --aspect plan their own")
    if zooming:
        return {"direction": Direction.RIGHT, "zoom": DEFAULT_ZOOM if args.zoom is None else args.zoom}
    if args.aspect is not None:
        return {"direction": Direction.RIGHT, "aspect": args.aspect}
    return {
        "direction": Direction(args.direction or Direction.RIGHT),
        "times": DEFAULT_TIMES if args.times is None else args.times,
        "expand_px": DEFAULT_EXPAND if args.expand is None else args.expand,
    }


def _candidate_paths(output: Path, count: int) -> list[Path]:
    """Where each candidate goes (``out.png`` → ``out-1.png``, ``out-2.png``...); none for one."""
    if count == 1:
        return []
    return [output.with_name(f"{output.stem}-{k}{output.suffix}") for k in range(1, count + 1)]


def _check_output(path: Path) -> None:
    """Refuse an output path that could not be written, before any model is loaded."""
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise CliError(f"cannot write {path}: unknown image format {path.suffix or '(no extension)'}")
    try:  # some formats Pillow only reads (PSD), others take no RGB (XBM)
        Image.new("RGB", (8, 8)).save(io.BytesIO(), fmt)
    except Exception as exc:
        raise CliError(f"cannot write {path}: saving an RGB image as {fmt} is not supported") from exc
    if path.is_dir():
        raise CliError(f"cannot write {path}: it is a folder")
    if not path.parent.is_dir():
        raise CliError(f"cannot write {path}: {path.parent} is not a folder")


def _make_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise CliError(f"cannot write into {path}: it is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot make the folder {path}: {exc.strerror or exc}") from exc


def _save(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    try:
        Image.fromarray(image).save(path)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _read_source(path: Path) -> np.ndarray:
    from outpaint_engine.imageio import ImageInputError, decode_image

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return decode_image(data)
    except ImageInputError as exc:
        raise CliError(f"{path}: {exc}") from exc


def _run(args: argparse.Namespace, settings: EngineSettings) -> int:
    output = args.output or Path(f"{args.input.stem}-outpaint.png")
    _check_output(output)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    auto_prompt = args.prompt.strip().lower() == AUTO_PROMPT
    if auto_prompt and not args.captioner.strip():
        raise CliError("--prompt auto needs a captioner: set OUTPAINT_CAPTIONER or --captioner")
    spec = JobSpec(
        **_growth(args),
        candidates=args.candidates,
        prompt="" if auto_prompt else args.prompt,
        negative_prompt=args.negative_prompt,
        seed=seed,
        steps=args.steps,
        guidance=args.guidance,
        window=args.size,
        ip_adapter_scale=args.ip_scale,
        continue_canvas=args.continue_canvas,
    )
    source = _read_source(args.input)
    plan = plan_job(source.shape[1], source.shape[0], spec)
    if args.save_steps:
        _make_folder(args.save_steps)

    terminal = sys.stderr.isatty()
    _quiet_libraries(terminal)
    from outpaint_engine.models import ModelLoadError
    from outpaint_engine.runner import Outpainter

    overrides = {
        "model": args.model,
        "ip_adapter": "" if args.no_ip_adapter else args.ip_adapter,
        "captioner": args.captioner,
        "device": args.device,
        "dtype": args.dtype,
        "low_vram": args.low_vram,
        "compile": args.compile or _default_compile(args.device),
        "batch_jobs": 1,  # one job: nothing to batch, nothing more to warm up
        "window": args.size,  # a compiled UNet is warmed up at the job's shapes
        "guidance": args.guidance,
    }
    try:
        engine = Outpainter.load(settings, **overrides)
    except ModelLoadError as exc:
        raise CliError(str(exc)) from exc
    if args.seed is None:
        print(f"{PROG}: seed {seed}", file=sys.stderr)
    print(f"{PROG}: plan: {plan.describe()} ({'×'.join(map(str, plan.final_size))})", file=sys.stderr)
    if not spec.prompt and engine.captioner is not None:  # captioned here, once, and shown
        spec = replace(spec, prompt=_auto_prompt(engine, source, spec))
    candidates: tuple[np.ndarray, ...] = (source,)
    digits = max(2, len(str(plan.total_steps)))  # file names sort in step order
    for result in _with_progress(engine, source, spec, plan, terminal):
        candidates = result.candidates
        if args.save_steps:
            _save(result.canvas, args.save_steps / f"step-{result.step + 1:0{digits}d}.png")
    height, width = candidates[0].shape[:2]
    paths = _candidate_paths(output, len(candidates))
    if paths:
        from outpaint_engine.grid import candidate_grid

        for candidate, path in zip(candidates, paths, strict=True):
            _save(candidate, path)
        _save(candidate_grid(candidates), output)
        names = ", ".join(str(p) for p in paths)
        print(f"{PROG}: wrote {names} ({width}×{height}) and their grid {output}", file=sys.stderr)
    else:
        _save(candidates[0], output)
        print(f"{PROG}: wrote {output} ({width}×{height})", file=sys.stderr)
    return 0


def _default_compile(device: str) -> str:
    """One-off runs use CUDA graphs where they apply (ready in seconds) and never the compiler
    unless asked."""
    import torch

    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "graphs" if on_cuda else "off"


def _auto_prompt(engine: Outpainter, source: np.ndarray, spec: JobSpec) -> str:
    """The captioner's prompt for the job, printed (or why there is none)."""
    caption = engine.caption(source, None if spec.zoom else spec.direction)  # a zoom grows every side
    if caption.text:
        print(f"{PROG}: prompt (auto): {caption.text}", file=sys.stderr)
    else:
        print(f"{PROG}: no auto prompt: {caption.reason}", file=sys.stderr)
    return caption.text


def _with_progress(
    engine: Outpainter, source: np.ndarray, spec: JobSpec, plan: Plan, terminal: bool
) -> Iterator[StepResult]:
    """Run the job with a tqdm bar over all denoising steps (on a terminal only)."""
    from tqdm import tqdm

    bar = tqdm(total=plan.total_windows * spec.steps, unit="step", disable=not terminal, dynamic_ncols=True)
    with bar:

        def progress(p: StepProgress) -> None:
            bar.set_description(f"expansion {p.step + 1}/{p.total_steps}")
            bar.update(1)

        yield from engine.run(source, spec, progress=progress, auto_prompt=False)


def _quiet_libraries(terminal: bool) -> None:
    """Keep library warnings off the terminal; download bars show on a terminal only."""
    import diffusers
    import transformers

    warnings.filterwarnings("ignore")
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if not terminal:
        transformers.utils.logging.disable_progress_bar()  # hub downloads too


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["queue"]:
        from outpaint_engine.queue import admin

        return admin.main(argv[1:])
    try:
        settings, ops = EngineSettings(), OpsSettings()
    except ValidationError as exc:
        print(f"{PROG}: error: {describe_setting_error(exc)}", file=sys.stderr)
        return 2
    setup_logging("WARNING", log_format=ops.log_format)  # the engine's warnings, as the services log
    args = _parser(settings).parse_args(argv)
    try:
        return _run(args, settings)
    except (CliError, PlanError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a last resort: still one line, never a traceback
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

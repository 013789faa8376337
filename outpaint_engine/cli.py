"""``outpaint``: extend an image from the command line.

    outpaint photo.jpg --direction right --times 3 -o wide.png

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
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np
from pydantic import ValidationError

from outpaint_engine.api import StepProgress, StepResult
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.observability.logs import setup_logging
from outpaint_engine.plan import Plan, PlanError, plan_job
from outpaint_engine.settings import EngineSettings, OpsSettings, describe_setting_error

if TYPE_CHECKING:
    from outpaint_engine.runner import Outpainter

PROG = "outpaint"


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
    p.add_argument("-d", "--direction", choices=[d.value for d in Direction], default="right")
    p.add_argument("-t", "--times", type=int, default=1, help="number of expansions (default: 1)")
    p.add_argument("--expand", type=int, default=256, help="pixels added per expansion (default: 256)")
    p.add_argument("-p", "--prompt", default="", help="what the new area shows (default: none)")
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
        help="a local vision-language model that writes the prompt when --prompt is empty",
    )
    p.add_argument("--device", default=settings.device, help="auto, cuda, cuda:N, mps or cpu")
    p.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"], default=settings.dtype)
    p.add_argument(
        "--low-vram", action="store_true", default=settings.low_vram, help="offload models to the CPU"
    )
    p.add_argument(
        "--compile",
        choices=["off", "default", "reduce-overhead"],
        default=settings.compile,
        help="torch.compile the UNet on CUDA (faster steps; the first run compiles for minutes)",
    )
    p.add_argument(
        "--save-steps",
        type=Path,
        metavar="DIR",
        help="also write the canvas after every expansion, as DIR/step-01.png, step-02.png...",
    )
    p.add_argument(
        "--continue",
        dest="continue_canvas",
        action="store_true",
        help="INPUT is an earlier result: keep its pixels instead of resizing it",
    )
    return p


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
    spec = JobSpec(
        direction=Direction(args.direction),
        times=args.times,
        expand_px=args.expand,
        prompt=args.prompt,
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
        "compile": args.compile,
        "window": args.size,  # a compiled UNet is warmed up at the job's shapes
        "guidance": args.guidance,
    }
    try:
        engine = Outpainter.load(settings, **overrides)
    except ModelLoadError as exc:
        raise CliError(str(exc)) from exc
    if args.seed is None:
        print(f"{PROG}: seed {seed}", file=sys.stderr)
    canvas = source
    digits = max(2, len(str(plan.total_steps)))  # file names sort in step order
    for result in _with_progress(engine, source, spec, plan, terminal):
        canvas = result.canvas
        if args.save_steps:
            _save(canvas, args.save_steps / f"step-{result.step + 1:0{digits}d}.png")
    _save(canvas, output)
    print(f"{PROG}: wrote {output} ({canvas.shape[1]}×{canvas.shape[0]})", file=sys.stderr)
    return 0


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

        yield from engine.run(source, spec, progress=progress)


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

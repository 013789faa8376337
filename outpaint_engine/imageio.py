"""Reading user images safely and writing results; shared by the CLI, the workers and the bot.

Pillow and numpy only (the bot imports this module; no OpenCV or torch). Images are H×W×3 uint8
RGB arrays, as in the rest of the engine.

The bad-input policy (DESIGN.md §6): every rejection is an :class:`ImageInputError` whose message
is one polite sentence fit to show a user. Sizes are checked from the file header before any pixel
is decoded (decompression bombs), truncated files are refused (``LOAD_TRUNCATED_IMAGES`` stays
False), and accepted images are normalised to upright 8-bit RGB: EXIF orientation applied,
transparency composited on white, palette/CMYK/16-bit/grayscale converted, first frame only.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps

MiB = 1024 * 1024

# Our own header check (``ImageLimits.max_pixels``) replaces Pillow's warning; Pillow's hard error
# (at twice ``Image.MAX_IMAGE_PIXELS``) is still caught and reported with our message.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_DISPLAY_NAMES = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP", "GIF": "GIF"}
_ALIASES = {"MPO": "JPEG"}  # phone cameras write multi-picture JPEGs; Pillow calls them MPO
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_WEBP_MAX_SIDE = 16383
_BACKGROUND = (255, 255, 255)
"""Transparent pixels are composited on white, as most viewers (and Discord's light theme) show them."""


class ImageInputError(ValueError):
    """An image a user sent cannot be used; the message says why in one sentence."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 25 * MiB
    max_pixels: int = 40_000_000
    min_side: int = 64
    max_aspect: float = 8.0
    formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF")


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    filename: str
    note: str | None  # why the image is not a full-size PNG, fit to show a user; None if it is


def format_size(n_bytes: int) -> str:
    """A byte count for people: ``10 MiB``, ``7.6 MiB``, ``512 KiB``, ``80 bytes``."""
    for unit, size in (("MiB", MiB), ("KiB", 1024)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n_bytes} bytes"


def _format_list(formats: tuple[str, ...]) -> str:
    names = [_DISPLAY_NAMES.get(f, f) for f in formats]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _not_an_image(limits: ImageLimits) -> ImageInputError:
    return ImageInputError(f"That file is not an image I can read ({_format_list(limits.formats)}).")


def _damaged() -> ImageInputError:
    return ImageInputError("That image file is damaged or incomplete; please send it again or try another.")


def _too_many_pixels(limits: ImageLimits, size: tuple[int, int] | None = None) -> ImageInputError:
    dims = f" ({size[0]}×{size[1]} pixels)" if size else ""
    return ImageInputError(
        f"That image is too large{dims}; the limit is {limits.max_pixels / 1e6:g} megapixels."
    )


def _sniff(data: bytes) -> str | None:
    """The format a file claims by its first bytes, for a helpful message when Pillow refuses it."""
    head = data[:32]
    signatures = (
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"\xff\xd8\xff", "JPEG"),
        (b"GIF87a", "GIF"),
        (b"GIF89a", "GIF"),
        (b"BM", "BMP"),
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
        (b"%PDF", "PDF"),
        (b"8BPS", "PSD"),
        (b"\x00\x00\x01\x00", "ICO"),
        (b"qoif", "QOI"),
        (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
        (b"\xff\x4f\xff\x51", "JPEG 2000"),
    )
    for magic, name in signatures:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return "AVIF" if head[8:12] in (b"avif", b"avis") else "HEIC"
    if head.lstrip()[:5] in (b"<svg ", b"<?xml"):
        return "SVG"
    return None


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open (header only) an image of an allowed format, or raise :class:`ImageInputError`."""
    if not data:
        raise ImageInputError("That file is empty.")
    if len(data) > limits.max_bytes:
        size, limit = format_size(len(data)), format_size(limits.max_bytes)
        raise ImageInputError(f"That file is too large ({size}; the limit is {limit}).")
    try:
        return Image.open(io.BytesIO(data), formats=list(limits.formats))
    except Image.DecompressionBombError as e:
        raise _too_many_pixels(limits) from e
    except Exception as e:  # Pillow raises many types for garbage: all mean "cannot read this"
        claimed = _sniff(data)
        if claimed is None:
            raise _not_an_image(limits) from e
        if claimed in limits.formats:
            raise _damaged() from e
        raise ImageInputError(
            f"{_DISPLAY_NAMES.get(claimed, claimed)} images are not supported; "
            f"please send a {_format_list(limits.formats)}."
        ) from e


def _check_header(im: Image.Image, limits: ImageLimits) -> tuple[str, int, int]:
    """Format and upright size from the header; refuse sizes outside ``limits``."""
    width, height = im.size
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # a broken EXIF block is ignored here and in decoding alike
        orientation = None
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    if width * height > limits.max_pixels:
        raise _too_many_pixels(limits, (width, height))
    if min(width, height) < limits.min_side:
        raise ImageInputError(
            f"That image is too small ({width}×{height} pixels); each side must be at least "
            f"{limits.min_side} pixels."
        )
    aspect = max(width, height) / min(width, height)
    if aspect > limits.max_aspect:
        raise ImageInputError(
            f"That image is too long and thin ({width}×{height} pixels); the longer side may be at "
            f"most {limits.max_aspect:g} times the shorter."
        )
    fmt = im.format or "?"
    return _ALIASES.get(fmt, fmt), width, height


def probe_image(data: bytes, limits: ImageLimits = ImageLimits()) -> tuple[str, int, int]:
    """``(format, width, height)`` of an acceptable image, read from its header without decoding.

    ``width``/``height`` are upright (EXIF orientation applied). Raises :class:`ImageInputError`
    for anything :func:`decode_image` would refuse before decoding.
    """
    with _open(data, limits) as im:
        return _check_header(im, limits)


def _sixteen_bit_to_8(im: Image.Image) -> Image.Image:
    values = np.asarray(im).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit gray scaled down, transparency composited on white, the rest converted."""
    if im.mode.startswith("I;16") or im.mode == "I":
        im = _sixteen_bit_to_8(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decode an untrusted image to an upright H×W×3 uint8 RGB array, or raise :class:`ImageInputError`.

    The header is checked against ``limits`` before any pixel is decoded. Animated GIF/WebP give
    their first frame; transparency is composited on white.
    """
    with _open(data, limits) as im:
        _check_header(im, limits)
        try:
            im.load()
            try:
                upright = ImageOps.exif_transpose(im)
            except Exception:  # a broken EXIF block: keep the pixels as stored
                upright = im
            rgb = np.array(_to_rgb(upright), dtype=np.uint8)
        except Image.DecompressionBombError as e:
            raise _too_many_pixels(limits) from e
        except MemoryError as e:
            raise ImageInputError("That image is too large for me to process.") from e
        except Exception as e:  # truncated data, bad chunks, decoder errors
            raise _damaged() from e
    height, width = rgb.shape[:2]
    if width * height > limits.max_pixels:  # a frame larger than its header said
        raise _too_many_pixels(limits, (width, height))
    return rgb


# --- writing -------------------------------------------------------------------------------------


def _to_pil(image: np.ndarray) -> Image.Image:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 RGB array, got {image.dtype} {image.shape}")
    return Image.fromarray(image, "RGB")


def _save(im: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def encode_png(image: np.ndarray, *, compress_level: int = 6) -> bytes:
    """Lossless PNG (``compress_level`` 1 is several times faster, for checkpoints)."""
    return _save(_to_pil(image), "PNG", compress_level=compress_level)


def encode_checkpoint_png(image: np.ndarray) -> bytes:
    """Lossless PNG for the queue's own storage (checkpoints and candidates of an RGB canvas),
    made for speed: zlib level 1 with run-length matching, through OpenCV. On a 2-MP canvas it
    takes about 0.1 s of a CPU core against 0.23–0.30 s for Pillow's level 1, and is no larger;
    :func:`decode_png` gives the same pixels back."""
    import cv2  # the workers' dependency, not the bot's (it never imports OpenCV)

    _to_pil(image)  # the same check of the array as every encoder's (no copy)
    options = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), options)
    if not ok:
        raise ValueError("OpenCV could not encode the canvas as PNG")
    return data.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """Decode a PNG this program wrote (a stored checkpoint): no limits, RGB uint8."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
        return np.array(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)


def _jpeg(im: Image.Image, quality: int) -> bytes:
    return _save(im, "JPEG", quality=quality, optimize=True)


def encode_for_upload(image: np.ndarray, max_bytes: int, *, stem: str = "outpaint") -> EncodedImage:
    """Encode for an upload limited to ``max_bytes``: PNG if it fits, else smaller encodings.

    Tries PNG, then WebP (quality 90), then JPEG at decreasing quality, then scaled-down JPEGs.
    The result always fits; ``note`` tells the user what was given up. Raises ``ValueError`` only
    if even a tiny JPEG does not fit (a limit of a few hundred bytes).
    """
    im = _to_pil(image)
    png = _save(im, "PNG", compress_level=6)
    if len(png) <= max_bytes:
        return EncodedImage(png, f"{stem}.png", None)
    why = f"the PNG was over this channel's {format_size(max_bytes)} limit"
    if max(im.size) <= _WEBP_MAX_SIDE:
        webp = _save(im, "WEBP", quality=90, method=4)
        if len(webp) <= max_bytes:
            return EncodedImage(webp, f"{stem}.webp", f"Shown as WebP ({why}).")
    jpeg = b""
    for quality in (90, 80, 70, 60):
        jpeg = _jpeg(im, quality)
        if len(jpeg) <= max_bytes:
            return EncodedImage(jpeg, f"{stem}.jpg", f"Shown as JPEG ({why}).")
    width, height = im.size
    scale = 1.0
    while True:
        # JPEG size grows roughly with the pixel count: aim a little under the limit.
        scale *= min(0.9, 0.95 * math.sqrt(max_bytes / len(jpeg)))
        size = (round(width * scale), round(height * scale))
        if min(size) < 8:
            raise ValueError(f"cannot fit a {width}×{height} image into {max_bytes} bytes")
        jpeg = _jpeg(im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), 80)
        if len(jpeg) <= max_bytes:
            note = f"Shown as a {size[0]}×{size[1]} JPEG, scaled down from {width}×{height} ({why})."
            return EncodedImage(jpeg, f"{stem}.jpg", note)


def preview_jpeg(image: np.ndarray, max_side: int = 256) -> bytes:
    """A small JPEG (longer side at most ``max_side``) for live progress previews."""
    im = _to_pil(image)
    im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return _jpeg(im, 75)

"""Bad-input policy and encodings of outpaint_engine.imageio (DESIGN.md §6)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from outpaint_engine.imageio import (
    ImageInputError,
    ImageLimits,
    MiB,
    decode_image,
    decode_png,
    encode_checkpoint_png,
    encode_for_upload,
    encode_png,
    format_size,
    preview_jpeg,
    probe_image,
)


def save(im: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def two_tone(width: int = 96, height: int = 80) -> Image.Image:
    """Red on the left half, blue on the right: channel order and orientation are both visible."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels, "RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` but that holds next to no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


# --- refusals --------------------------------------------------------------------------------------


def refusal(data: bytes, limits: ImageLimits | None = None) -> str:
    with pytest.raises(ImageInputError) as caught:
        decode_image(data, limits or ImageLimits())
    message = str(caught.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_empty_file():
    assert refusal(b"") == "That file is empty."


def test_not_an_image():
    assert refusal(b"hello, this is a text file\n" * 10) == (
        "That file is not an image I can read (PNG, JPEG, WebP or GIF)."
    )


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_truncated_file(fmt):
    data = save(Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8)), fmt)
    assert "damaged or incomplete" in refusal(data[: len(data) // 2])


def test_corrupt_header_of_an_allowed_format():
    data = bytearray(save(two_tone(), "PNG"))
    data[16:24] = b"\xff" * 8  # width and height in IHDR: the chunk's CRC no longer matches
    assert "damaged or incomplete" in refusal(bytes(data))


@pytest.mark.parametrize(("fmt", "name"), [("BMP", "BMP"), ("TIFF", "TIFF")])
def test_unsupported_format(fmt, name):
    message = refusal(save(two_tone(), fmt))
    assert message == f"{name} images are not supported; please send a PNG, JPEG, WebP or GIF."


def test_allowed_formats_are_configurable():
    data = save(two_tone(), "WEBP")
    assert "WebP images are not supported" in refusal(data, ImageLimits(formats=("PNG", "JPEG")))
    assert decode_image(data, ImageLimits(formats=("WEBP",))).shape == (80, 96, 3)


def test_over_max_bytes():
    data = save(two_tone(), "PNG")
    assert refusal(data, ImageLimits(max_bytes=100)) == (
        f"That file is too large ({format_size(len(data))}; the limit is 100 bytes)."
    )


@pytest.mark.parametrize(("width", "height"), [(8000, 6000), (30000, 30000)])
def test_decompression_bomb_refused_from_the_header(width, height):
    """Both our limit (48 MP) and Pillow's own bomb error (900 MP) end in our message."""
    message = refusal(png_header_only(width, height))
    assert message.startswith("That image is too large")
    assert message.endswith("the limit is 40 megapixels.")
    with pytest.raises(ImageInputError):
        probe_image(png_header_only(width, height))


def test_too_small():
    assert refusal(save(two_tone(32, 100), "PNG")) == (
        "That image is too small (32×100 pixels); each side must be at least 64 pixels."
    )


def test_extreme_aspect():
    assert refusal(save(two_tone(1000, 100), "PNG")) == (
        "That image is too long and thin (1000×100 pixels); the longer side may be at most 8 times "
        "the shorter."
    )


def test_probe_reads_the_header_only():
    data = save(Image.fromarray(noise(200, 300)), "JPEG")
    assert probe_image(data) == ("JPEG", 300, 200)
    # A cut file still probes (its header is intact) but does not decode.
    assert probe_image(data[: len(data) // 2]) == ("JPEG", 300, 200)
    with pytest.raises(ImageInputError):
        decode_image(data[: len(data) // 2])


# --- normalisation -------------------------------------------------------------------------------


def test_plain_rgb_round_trip():
    im = two_tone()
    out = decode_image(save(im, "PNG"))
    assert out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, np.asarray(im))


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be turned 90° clockwise to be upright
    data = save(two_tone(96, 80), "JPEG", exif=exif, quality=95)
    assert probe_image(data) == ("JPEG", 80, 96)
    out = decode_image(data)
    assert out.shape == (96, 80, 3)
    # The stored left (red) half is the top after the turn, the right (blue) half the bottom.
    assert out[10, 40, 0] > 200 and out[10, 40, 2] < 50
    assert out[85, 40, 2] > 200 and out[85, 40, 0] < 50


def test_rgba_composited_on_white():
    pixels = np.zeros((64, 64, 4), np.uint8)
    pixels[:, :32] = (255, 0, 0, 255)  # opaque red
    pixels[:, 32:] = (0, 0, 0, 0)  # fully transparent
    out = decode_image(save(Image.fromarray(pixels, "RGBA"), "PNG"))
    assert out.shape == (64, 64, 3)
    assert (out[:, :32] == (255, 0, 0)).all()
    assert (out[:, 32:] == 255).all()


def test_la_half_transparent():
    pixels = np.zeros((64, 64, 2), np.uint8)
    pixels[..., 1] = 128  # black at half opacity over white
    out = decode_image(save(Image.fromarray(pixels, "LA"), "PNG"))
    assert out.shape == (64, 64, 3) and abs(int(out[0, 0, 0]) - 127) <= 1


def test_palette_with_transparency():
    im = Image.new("P", (64, 64), 1)
    im.putpalette([0, 255, 0] + [255, 0, 0] + [0] * 762)
    im.paste(0, (0, 0, 32, 64))
    out = decode_image(save(im, "PNG", transparency=0))
    assert (out[:, :32] == 255).all()  # transparent index shown as white
    assert (out[:, 32:] == (255, 0, 0)).all()


def test_cmyk_jpeg():
    im = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # red in ink
    out = decode_image(save(im, "JPEG", quality=95))
    assert out.shape == (64, 64, 3)
    assert out[32, 32, 0] > 200 and out[32, 32, 1] < 60 and out[32, 32, 2] < 60


def test_sixteen_bit_gray():
    values = np.full((64, 64), 65535, np.uint16)
    values[:, 32:] = 32896  # 128 · 257
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    out = decode_image(save(im, "PNG"))
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert (out[:, :32] == 255).all() and (out[:, 32:] == 128).all()


def test_gray_and_bilevel():
    gray = decode_image(save(Image.new("L", (64, 64), 77), "PNG"))
    assert (gray == 77).all() and gray.shape == (64, 64, 3)
    bilevel = decode_image(save(Image.new("1", (64, 64), 1), "PNG"))
    assert (bilevel == 255).all()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_gives_its_first_frame(fmt):
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    out = decode_image(data)
    assert out.shape == (64, 64, 3)
    assert out[32, 32, 0] > 240 and out[32, 32, 2] < 15


# --- writing -------------------------------------------------------------------------------------


def test_png_round_trip():
    image = noise(40, 70)
    np.testing.assert_array_equal(decode_png(encode_png(image)), image)
    np.testing.assert_array_equal(decode_png(encode_png(image, compress_level=1)), image)
    np.testing.assert_array_equal(decode_png(encode_checkpoint_png(image)), image)


def test_encoders_refuse_wrong_arrays():
    with pytest.raises(ValueError):
        encode_png(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        encode_checkpoint_png(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        preview_jpeg(np.zeros((8, 8, 3), np.float32))


def test_upload_keeps_png_when_it_fits():
    image = noise(64, 64)
    out = encode_for_upload(image, 10 * MiB)
    assert out.filename == "outpaint.png" and out.note is None
    np.testing.assert_array_equal(decode_png(out.data), image)


@pytest.mark.parametrize("limit", [60_000, 20_000, 3_000])
def test_upload_shrinks_to_fit_and_says_so(limit):
    image = noise(256, 384)  # about 295 KB as PNG: noise does not compress
    out = encode_for_upload(image, limit)
    assert len(out.data) <= limit
    assert out.note is not None and format_size(limit) in out.note
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.format == {"webp": "WEBP", "jpg": "JPEG"}[out.filename.rsplit(".", 1)[1]]
        if "scaled down" in out.note:
            assert im.size[0] < 384 and f"{im.size[0]}×{im.size[1]}" in out.note
        else:
            assert im.size == (384, 256)


def test_upload_smooth_image_prefers_webp():
    ramp = np.linspace(0, 255, 512, dtype=np.float32)
    image = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), axis=-1)
    image = (image + noise(512, 512)[..., :3] % 8).clip(0, 255).astype(np.uint8)
    png_size = len(encode_png(image))
    out = encode_for_upload(image, png_size // 2)
    assert out.filename.endswith(".webp") and out.note is not None and out.note.startswith("Shown as WebP")


def test_upload_impossible_limit_raises():
    with pytest.raises(ValueError):
        encode_for_upload(noise(64, 64), 10)


def test_preview_jpeg():
    data = preview_jpeg(noise(300, 1200), max_side=256)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (256, 64)


def test_format_size():
    assert format_size(10 * MiB) == "10 MiB"
    assert format_size(8_000_000) == "7.6 MiB"
    assert format_size(2048) == "2 KiB"
    assert format_size(80) == "80 bytes"

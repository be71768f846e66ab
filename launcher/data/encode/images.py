"""Image decoding and augmentation in the data-loader workers: any file to 8-bit RGB, seeded crops.

`open_rgb` turns a path or encoded bytes into a fully decoded, upright, 8-bit RGB image, or raises
`ImageError` (a `ValueError`) whose message starts with the example's origin and says what to do;
no other exception leaves it. Conversion rules:

- alpha (RGBA, LA, PA, RGBa, La) and colour-key transparency (P, L, RGB with ``transparency``):
  composited on white;
- I;16 (any byte order): value / 257; I: the same when all values lie in 0..65535, else the
  image's min..max stretched to 0..255; F: x 255 when all values lie in 0..1, else stretched
  (NaN: 0);
- animated files (GIF, APNG, WebP, multi-page TIFF): the first frame;
- an unreadable EXIF block: the orientation is ignored, the pixels are kept.

PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set here and must stay False: a truncated file
is an error, not grey pixels. Images over ``Image.MAX_IMAGE_PIXELS`` are errors, not warnings.

`augment` is a pure function of (image, settings, seed), every draw from one
``numpy.random.Generator(PCG64(seed))``, in this order, each only when its stage is on:
the random resized crop (`crop_box`, torchvision's RandomResizedCrop sampling; the crop keeps its
own size, the model's image processor resizes), one coin for the horizontal flip, then the colour
jitter: a permutation of (brightness, contrast, saturation) first, then their three factors, each
uniform in [max(0, 1 - j), 1 + j], applied in the permuted order (torchvision's ColorJitter order
is random too). PIL and numpy only: no torch here.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError

from launcher.data.encode.sources import head, open_source

FORMATS_HINT = "use a JPEG, PNG, GIF, WebP, BMP or TIFF file, or drop the example"
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)


class ImageError(ValueError):
    """A file or value that is not a readable image; the message starts with its origin."""


def _check_source(source: Any, origin: str) -> str | io.BytesIO:
    """A path that exists and is not empty, or the bytes as a stream."""
    return open_source(source, origin, ImageError, "image", FORMATS_HINT)


def _upright(image: Image.Image) -> Image.Image:
    """The image with its EXIF orientation applied (a copy); unreadable EXIF: left as it is."""
    try:
        return ImageOps.exif_transpose(image) or image.copy()
    except Exception:  # a corrupt EXIF block does not spoil the pixels
        return image.copy()


def _stretched(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.clip(values, 0, 255)
    return (values - low) * (255.0 / (high - low))


def _eight_bit(image: Image.Image) -> Image.Image:
    """A single-channel I;16*, I or F image as L, by the rules in the module docstring."""
    values = np.asarray(image, dtype=np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    in_range = values.size > 0 and values.min() >= 0
    if image.mode.startswith("I;16"):
        scaled = values / 257.0
    elif image.mode == "I":
        scaled = values / 257.0 if in_range and values.max() <= 65535 else _stretched(values)
    else:
        scaled = values * 255.0 if in_range and values.max() <= 1 else _stretched(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as a new 8-bit RGB image; transparency composited on white."""
    keyed = "transparency" in image.info and image.mode in ("P", "L", "RGB", "1")
    if image.mode in ALPHA_MODES or keyed:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        return _eight_bit(image).convert("RGB")
    return image.convert("RGB")


def open_rgb(source: str | bytes, origin: str) -> Image.Image:
    """`source` (a file path, or the encoded bytes of an image) decoded completely, EXIF
    orientation applied, converted to 8-bit RGB whatever the mode (the module docstring has the
    rules). Any failure is an `ImageError` whose message starts with `origin`."""
    stream = _check_source(source, origin)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as opened:
                opened.load()
                image = _upright(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{origin}: image too large for PIL's decompression-bomb limit "
                         f"({exc}); downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS if the "
                         f"file is trusted") from exc
    except UnidentifiedImageError:
        raise ImageError(f"{origin}: not an image (PIL cannot identify it); it starts with "
                         f"{head(stream)!r}; {FORMATS_HINT}") from None
    except FileNotFoundError:
        raise ImageError(f"{origin}: file not found; check the path") from None
    except Exception as exc:
        raise ImageError(f"{origin}: truncated or corrupt image ({type(exc).__name__}: {exc}); "
                         f"re-download or re-encode it, or drop the example") from exc
    try:
        return _rgb(image)
    except Exception as exc:
        raise ImageError(f"{origin}: cannot convert PIL mode {image.mode} to RGB "
                         f"({type(exc).__name__}: {exc}); re-save it as RGB") from exc


def _pair(value: Any, name: str) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not (0 < low <= high and math.isfinite(high)):
        raise ValueError(f"{name} must be two numbers with 0 < low <= high, got {value!r}")
    return low, high


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation settings (what the recipe's `[data.augment]` table holds).
    Lists (as TOML gives them) become tuples; out-of-range values raise ValueError."""

    # random resized crop: the range of the crop's share of the image area; None: no crop
    crop_scale: tuple[float, float] | None = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width / height range of the crop
    hflip: bool = True  # horizontal flip with probability 0.5
    # brightness, contrast, saturation each by a factor in [max(0, 1 - j), 1 + j]; 0: off
    color_jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.crop_scale is not None:
            scale = _pair(self.crop_scale, "crop_scale")
            if scale[1] > 1:
                raise ValueError(f"crop_scale must lie in (0, 1], got {self.crop_scale!r}")
            object.__setattr__(self, "crop_scale", scale)
        object.__setattr__(self, "crop_ratio", _pair(self.crop_ratio, "crop_ratio"))
        jitter = float(self.color_jitter)
        if not (math.isfinite(jitter) and jitter >= 0):
            raise ValueError(f"color_jitter must be a number >= 0, got {self.color_jitter!r}")
        object.__setattr__(self, "color_jitter", jitter)


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """A stable 63-bit seed for one example's augmentation in one epoch (blake2b of the three),
    so a resumed or elastic run sees the same pixels."""
    key = f"sft-launch/augment/v1:{int(seed)}:{int(epoch)}:{int(index)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the random resized crop, sampled as torchvision's
    RandomResizedCrop.get_params does: up to 10 tries of an area share in `scale` and a
    log-uniform aspect ratio in `ratio` that fit inside the image, else a central crop at the
    nearest allowed ratio (the whole image when its own ratio is allowed)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"cannot crop a {width}x{height} image")
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * float(rng.uniform(scale[0], scale[1]))
        aspect = math.exp(float(rng.uniform(log_low, log_high)))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    own = width / height
    if own < min(ratio):
        w, h = width, max(1, min(height, round(width / min(ratio))))
    elif own > max(ratio):
        w, h = max(1, min(width, round(height * max(ratio)))), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def augment(image: Image.Image, settings: Augmentation, seed: int) -> Image.Image:
    """A new image, a pure function of (image, settings, seed): random resized crop (kept at its
    own size), horizontal flip, colour jitter in a seeded order (the module docstring has the
    draws). The input is not changed; with everything off, a copy of it."""
    rng = np.random.Generator(np.random.PCG64(seed))
    out = image
    if settings.crop_scale is not None:
        out = out.crop(crop_box(out.width, out.height, settings.crop_scale,
                                settings.crop_ratio, rng))
    if settings.hflip and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = jittered(out, settings.color_jitter, rng)
    return out.copy() if out is image else out


def jittered(image: Image.Image, jitter: float, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and colour each scaled by a factor in [1 - jitter, 1 + jitter], in
    a random order drawn from `rng` (nothing drawn, `image` itself, when `jitter` is 0)."""
    if jitter <= 0:
        return image
    order = rng.permutation(len(ENHANCERS))
    factors = rng.uniform(max(0.0, 1.0 - jitter), 1.0 + jitter, size=len(ENHANCERS))
    for which in order:
        image = ENHANCERS[which](image).enhance(float(factors[which]))
    return image


def contact_sheet(images: list[Image.Image], captions: list[str], out: Path,
                  cell: tuple[int, int] = (224, 224), columns: int = 4) -> None:
    """A PNG at `out`: each image fitted into a `cell` (width, height) with its caption
    below, `columns` to a row (what `sft-launch preview` draws for images)."""
    from PIL import ImageDraw

    width, height = cell
    rows = max(1, math.ceil(len(images) / columns))
    sheet = Image.new("RGB", (columns * width, rows * (height + 20)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = index % columns * width, index // columns * (height + 20)
        fitted = ImageOps.contain(image, cell)
        sheet.paste(fitted, (x + (width - fitted.width) // 2, y + (height - fitted.height) // 2))
        draw.text((x + 4, y + height + 4), caption[:40], fill="black")
    sheet.save(out, format="PNG")

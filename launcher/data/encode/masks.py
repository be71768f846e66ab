"""Segmentation masks: class-index PNGs read and checked, moved with their image by the same
seeded geometry, drawn over their image, and written back as PNGs. PIL and numpy only.

A mask is a single-channel image whose pixel values are class ids: a palette ("P") PNG's values
are its indices (VOC's SegmentationClass files), a greyscale ("L", "I;16", "I") one's its grey
levels; `IGNORE` (255) marks pixels that carry no loss and no score (VOC's object outlines).
A colour (RGB) mask is refused: which colour is which class is not in the file.

`augment_pair` moves a mask with its image: `launcher.data.encode.images.augment` on the image,
and the same draws (one ``PCG64(seed)``, in the same order) replayed on the mask for the crop and
the flip, which are pixel-exact; the colour jitter touches the image only. `resize_pair` brings
both to the model's size, the image bilinear, the mask nearest (no new class value appears).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from launcher.data.coco_masks import coco_document, coco_names
from launcher.data.encode.images import Augmentation, augment, crop_box
from launcher.data.encode.sources import open_source

IGNORE = 255  # a mask value that carries no loss and no score
MASK_HINT = "give a class-index PNG (palette or greyscale)"


class MaskError(ValueError):
    """A mask that cannot be used; the message starts with its origin."""


def open_mask(source: str | bytes, origin: str) -> tuple[np.ndarray, list[int] | None]:
    """The class ids of the mask at `source` (a path or a file's bytes), shape (height, width),
    uint8; and its palette (768 RGB values) when it is a palette PNG. `MaskError` otherwise."""
    stream = open_source(source, origin, MaskError, "mask", MASK_HINT)
    try:
        with Image.open(stream) as opened:
            opened.load()
            mask = opened.copy()
    except UnidentifiedImageError:
        raise MaskError(f"{origin}: not an image (PIL cannot identify it); {MASK_HINT}") from None
    except Exception as exc:
        raise MaskError(f"{origin}: truncated or corrupt mask ({type(exc).__name__}: {exc}); "
                        "re-export it") from exc
    if mask.mode not in ("P", "L", "1", "I;16", "I;16B", "I;16L", "I"):
        raise MaskError(f"{origin}: a {mask.mode} mask: colours do not say which class is "
                        f"which; {MASK_HINT} whose pixel values are the class ids")
    values = np.asarray(mask)
    if values.min() < 0 or values.max() > IGNORE:
        raise MaskError(f"{origin}: mask values run to {values.max()}: class ids are 0..254 "
                        f"({IGNORE}: ignored)")
    palette = mask.getpalette() if mask.mode == "P" else None
    return values.astype(np.uint8), palette


def check_mask(mask: np.ndarray, size: tuple[int, int], classes: int, origin: str) -> None:
    """`MaskError` unless the mask is `size` (width, height) and holds class ids below
    `classes` (or `IGNORE`) only."""
    if (mask.shape[1], mask.shape[0]) != size:
        raise MaskError(f"{origin}: the mask is {mask.shape[1]}x{mask.shape[0]}, its image "
                        f"{size[0]}x{size[1]}: a mask has its image's size")
    found = set(np.unique(mask).tolist()) - {IGNORE}
    unknown = sorted(v for v in found if v >= classes)
    if unknown:
        raise MaskError(f"{origin}: mask values {unknown} are not class ids (0..{classes - 1}, "
                        f"or {IGNORE}: ignored): name every class, or fix the mask")


def augment_pair(image: Image.Image, mask: np.ndarray, settings: Augmentation,
                 seed: int) -> tuple[Image.Image, np.ndarray]:
    """The image as `augment` gives it, and the mask cropped and flipped by the same draws."""
    rng = np.random.Generator(np.random.PCG64(seed))  # the draws `augment` makes, in its order
    out = mask
    if settings.crop_scale is not None:
        left, top, right, bottom = crop_box(mask.shape[1], mask.shape[0], settings.crop_scale,
                                            settings.crop_ratio, rng)
        out = out[top:bottom, left:right]
    if settings.hflip and rng.random() < 0.5:
        out = out[:, ::-1]
    return augment(image, settings, seed), np.ascontiguousarray(out)


def resize_pair(image: Image.Image, mask: np.ndarray | None, size: tuple[int, int]
                ) -> tuple[Image.Image, np.ndarray | None]:
    """Both at `size` (width, height): the image bilinear, the mask nearest."""
    resized = None
    if mask is not None:
        resized = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    return image.resize(size, Image.Resampling.BILINEAR), resized


def voc_palette() -> list[int]:
    """Pascal VOC's palette (class i's colour from the bits of i), 256 RGB triples flat."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [red, green, blue]
    return palette


def overlay(image: Image.Image, mask: np.ndarray, palette: list[int] | None,
            alpha: float = 0.5) -> Image.Image:
    """The image with each class's pixels tinted by its palette colour (VOC's by default);
    ignored pixels left as they are."""
    colours = np.asarray(palette or voc_palette(), dtype=np.float32).reshape(-1, 3)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    tinted = pixels * (1 - alpha) + colours[mask] * alpha
    kept = (mask == IGNORE)[..., None]
    return Image.fromarray(np.where(kept, pixels, tinted).round().astype(np.uint8))


def classes_in(mask: np.ndarray, names: list[str]) -> str:
    """The classes a mask holds (IGNORE aside), by name (by id past the names)."""
    return ", ".join(names[v] if v < len(names) else str(v)
                     for v in map(int, np.unique(mask)) if v != IGNORE)


def mask_png(mask: np.ndarray, palette: list[int] | None) -> bytes:
    """A class-index PNG of `mask`: a palette PNG with `palette`, else greyscale."""
    values = np.ascontiguousarray(mask, dtype=np.uint8)
    size = (values.shape[1], values.shape[0])
    picture = Image.frombytes("P" if palette is not None else "L", size, values.tobytes())
    if palette is not None:
        picture.putpalette(palette)
    picture.save(buffer := io.BytesIO(), format="PNG")
    return buffer.getvalue()


def class_names_beside(source: str) -> list[str] | None:
    """The lines of `class_names.txt` in the data folder `source` (or beside the data file),
    as labelme2voc writes it, or a COCO file's categories (`coco_names`); None when there are
    none."""
    path = Path(source)
    if path.suffix.lower() == ".json" and path.is_file() and (
            coco := coco_document(path.read_text(encoding="utf-8"))) is not None:
        return coco_names(coco)
    found = (path if path.is_dir() else path.parent) / "class_names.txt"
    if not found.is_file():
        return None
    return [line.strip() for line in found.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def model_size(processor: Any) -> tuple[int, int]:
    """(width, height) the model takes images at: the processor's crop size when it crops,
    else its size (a shortest edge: a square)."""
    size = (processor.crop_size if getattr(processor, "do_center_crop", False)
            else processor.size)
    if size_field(size, "height") and size_field(size, "width"):
        return int(size_field(size, "width")), int(size_field(size, "height"))
    edge = int(size_field(size, "shortest_edge") or 512)
    return edge, edge


def size_field(size: Any, key: str) -> Any:
    """One entry of a processor's size (a dict, or transformers' SizeDict); None when absent."""
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)

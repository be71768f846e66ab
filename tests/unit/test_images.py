"""Worker-side image decoding (every PIL mode to RGB, clear errors) and seeded augmentation."""

from __future__ import annotations

import hashlib
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from launcher.data.encode.images import (
    Augmentation,
    ImageError,
    augment,
    augmentation_seed,
    crop_box,
    open_rgb,
)
from tests.conftest import REPO

HYMENOPTERA = REPO.parent / "shared" / "data" / "hymenoptera" / "train"
ANTS = sorted((HYMENOPTERA / "ants").glob("*.jpg"))
GIFS = sorted(HYMENOPTERA.glob("*/*.gif"))
OFF = Augmentation(crop_scale=None, hflip=False, color_jitter=0.0)


def _saved(tmp_path: Path, image: Image.Image, name: str, **params: object) -> Path:
    path = tmp_path / name
    image.save(path, **params)
    return path


def _photo() -> Image.Image:
    """A small deterministic 'photo': gradients and a square, so crops and flips show."""
    y, x = np.mgrid[0:48, 0:64]
    pixels = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    pixels[10:20, 5:15] = (250, 20, 30)
    return Image.fromarray(pixels)


def _digest(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest() + f"{image.size}"


@pytest.mark.parametrize(("mode", "name"), [("L", "l.png"), ("LA", "la.png"), ("1", "one.png"),
                                            ("RGB", "rgb.bmp"), ("P", "p.png"),
                                            ("I", "i.tif"), ("F", "f.tif"), ("CMYK", "c.jpg"),
                                            ("CMYK", "c.tif"), ("RGBA", "rgba.webp")])
def test_every_mode_becomes_rgb_of_the_same_size(tmp_path: Path, mode: str, name: str) -> None:
    path = _saved(tmp_path, _photo().convert(mode).resize((30, 20)), name)
    image = open_rgb(str(path), "row 1")
    assert (image.mode, image.size) == ("RGB", (30, 20))


def test_palette_transparency_is_white(tmp_path: Path) -> None:
    image = Image.new("P", (8, 6), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 1)
    rgb = open_rgb(str(_saved(tmp_path, image, "t.png", transparency=0)), "row 1")
    assert rgb.mode == "RGB" and rgb.size == (8, 6)
    assert rgb.getpixel((0, 0)) == (0, 0, 255)
    assert rgb.getpixel((5, 3)) == (255, 255, 255)


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (4, 2), (255, 0, 0, 0))
    image.putpixel((0, 0), (10, 200, 30, 255))
    image.putpixel((1, 0), (0, 0, 0, 128))
    rgb = open_rgb(str(_saved(tmp_path, image, "a.png")), "row 1")
    assert rgb.getpixel((0, 0)) == (10, 200, 30)
    assert rgb.getpixel((3, 1)) == (255, 255, 255)
    assert all(126 <= c <= 128 for c in rgb.getpixel((1, 0)))


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    path = _saved(tmp_path, Image.fromarray(values), "g16.png")
    assert Image.open(path).mode.startswith("I;16")
    rgb = open_rgb(str(path), "row 1")
    assert rgb.size == (3, 1)
    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (100,) * 3, (255,) * 3]


def test_float_images_in_zero_one_are_scaled(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    rgb = open_rgb(str(_saved(tmp_path, Image.fromarray(values), "f.tif")), "row 1")
    assert [rgb.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_cmyk_colours_survive(tmp_path: Path) -> None:
    image = Image.new("CMYK", (10, 6), (0, 255, 255, 0))
    red = open_rgb(str(_saved(tmp_path, image, "c.tif")), "row 1").getpixel((5, 3))
    assert red[0] > 200 and red[1] < 50 and red[2] < 50


def test_the_real_gif_and_photo() -> None:
    gif = open_rgb(str(GIFS[0]), "gif")
    assert gif.mode == "RGB" and gif.size == Image.open(GIFS[0]).size
    photo = open_rgb(str(ANTS[0]), "photo")
    assert photo.mode == "RGB" and photo.size == Image.open(ANTS[0]).size


def test_animated_gif_gives_the_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 2
    assert open_rgb(str(path), "row 1").getpixel((3, 2)) == (255, 0, 0)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _saved(tmp_path, _photo().resize((40, 20)), "rot.jpg", exif=exif)
    assert Image.open(path).size == (40, 20)
    assert open_rgb(str(path), "row 1").size == (20, 40)
    assert open_rgb(path.read_bytes(), "row 1").size == (20, 40)


def test_bytes_work_like_a_path(tmp_path: Path) -> None:
    path = _saved(tmp_path, _photo(), "p.png")
    from_path, from_bytes = open_rgb(str(path), "a"), open_rgb(path.read_bytes(), "b")
    assert from_path.tobytes() == from_bytes.tobytes() == _photo().tobytes()


def _expect_error(source: str | bytes, words: str) -> str:
    with pytest.raises(ImageError) as caught:
        open_rgb(source, "train.jsonl:7")
    message = str(caught.value)
    assert message.startswith("train.jsonl:7: "), message
    assert words in message, message
    return message


def test_truncated_jpeg_is_an_error_not_grey_pixels(tmp_path: Path) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = ANTS[0].read_bytes()
    half = tmp_path / "half.jpg"
    half.write_bytes(data[: len(data) // 2])
    _expect_error(str(half), "truncated or corrupt image (")
    _expect_error(data[: len(data) // 2], "truncated or corrupt image (")


def test_corrupt_png_is_an_error(tmp_path: Path) -> None:
    data = bytearray((_saved(tmp_path, _photo(), "p.png")).read_bytes())
    _expect_error(bytes(data[: len(data) // 2]), "truncated or corrupt image (")
    middle = len(data) // 2
    data[middle: middle + 40] = bytes(b ^ 0xFF for b in data[middle: middle + 40])
    _expect_error(bytes(data), "truncated or corrupt image (")


def test_files_that_are_not_images(tmp_path: Path) -> None:
    text = tmp_path / "x.png"
    text.write_text("this is not a picture\n")
    _expect_error(str(text), "not an image (PIL cannot identify it)")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _expect_error(str(empty), "empty")
    _expect_error(b"", "empty")
    _expect_error(str(tmp_path / "missing.jpg"), "file not found")
    _expect_error(np.random.default_rng(0).bytes(4096), "")
    _expect_error(str(tmp_path), "folder")


@pytest.mark.parametrize("pixels", [150, 250])
def test_decompression_bombs_are_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        pixels: int) -> None:
    side = int(pixels**0.5) + 1
    path = _saved(tmp_path, Image.new("RGB", (side, side)), "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    _expect_error(str(path), "decompression-bomb")


def test_crop_box_stays_inside_with_the_area_share_in_scale() -> None:
    rng = np.random.default_rng(1)
    for _ in range(1000):
        width = int(rng.integers(16, 800))
        height = max(1, round(width / float(rng.uniform(3 / 4, 4 / 3))))
        low = float(rng.uniform(0.05, 0.6))  # higher: the central fallback gets likely
        scale = (low, float(rng.uniform(low, 1.0)))
        left, top, right, bottom = crop_box(width, height, scale, (3 / 4, 4 / 3), rng)
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        w, h = right - left, bottom - top
        slack = (w + h + 1) / (2 * width * height)  # w and h are rounded
        assert scale[0] - slack <= w * h / (width * height) <= scale[1] + slack


def test_crop_box_falls_back_to_a_central_crop_at_the_nearest_ratio() -> None:
    rng = np.random.default_rng(0)
    assert crop_box(1000, 10, (0.5, 1.0), (3 / 4, 4 / 3), rng) == (493, 0, 506, 10)
    assert crop_box(10, 1000, (0.5, 1.0), (3 / 4, 4 / 3), rng) == (0, 493, 10, 506)


def test_augment_is_deterministic_and_seeds_differ() -> None:
    image = _photo()
    before = image.tobytes()
    settings = Augmentation(crop_scale=(0.3, 1.0), color_jitter=0.4)
    assert _digest(augment(image, settings, 7)) == _digest(augment(image, settings, 7))
    assert len({_digest(augment(image, settings, seed)) for seed in range(12)}) == 12
    assert image.tobytes() == before


def test_the_crop_is_the_first_draw_and_keeps_its_size() -> None:
    image, seed = _photo(), 123
    box = crop_box(64, 48, (0.25, 1.0), (3 / 4, 4 / 3), np.random.Generator(np.random.PCG64(seed)))
    out = augment(image, Augmentation(hflip=False, color_jitter=0.0), seed)
    assert out.size == (box[2] - box[0], box[3] - box[1])
    assert out.tobytes() == image.crop(box).tobytes()


def test_flip_and_jitter_alone() -> None:
    image = _photo()
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    flips = {augment(image, Augmentation(crop_scale=None, color_jitter=0.0), s).tobytes()
             for s in range(16)}
    assert flips == {image.tobytes(), mirrored}
    jittered = augment(image, Augmentation(crop_scale=None, hflip=False, color_jitter=0.5), 3)
    assert jittered.size == image.size and jittered.tobytes() != image.tobytes()


def test_everything_off_returns_the_same_pixels() -> None:
    image = _photo()
    out = augment(image, OFF, 99)
    assert out is not image and out.tobytes() == image.tobytes()


def test_settings_from_toml_lists_and_bad_values() -> None:
    settings = Augmentation(crop_scale=[0.5, 1.0], crop_ratio=[1, 2])  # type: ignore[arg-type]
    assert settings.crop_scale == (0.5, 1.0) and settings.crop_ratio == (1.0, 2.0)
    hash(settings)
    for bad in ({"crop_scale": (0.5, 1.5)}, {"crop_scale": (0.8, 0.2)}, {"crop_ratio": (0, 1)},
                {"color_jitter": -0.1}):
        with pytest.raises(ValueError):
            Augmentation(**bad)  # type: ignore[arg-type]


SCRIPT = """
import hashlib, sys
from launcher.data.encode.images import Augmentation, augment, open_rgb
from tests.conftest import REPO
image = augment(open_rgb(sys.argv[1], "x"), Augmentation(color_jitter=0.4), int(sys.argv[2]))
print(hashlib.sha256(image.tobytes()).hexdigest() + str(image.size))
"""


def test_same_pixels_in_a_fresh_process_and_a_spawned_worker(tmp_path: Path) -> None:
    path, seed = str(_saved(tmp_path, _photo(), "p.png")), augmentation_seed(3, 1, 42)
    settings = Augmentation(color_jitter=0.4)
    here = _digest(augment(open_rgb(path, "x"), settings, seed))
    fresh = subprocess.run([sys.executable, "-c", SCRIPT, path, str(seed)], cwd=REPO,
                           capture_output=True, text=True, check=True, timeout=60)
    assert fresh.stdout.strip() == here
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        image = pool.apply(open_rgb, (path, "x"))
        worker = pool.apply(augment, (image, settings, seed))
    assert _digest(worker) == here


def test_augmentation_seed_is_stable_and_distinct() -> None:
    assert augmentation_seed(0, 0, 0) == 717755900420111752
    seeds = {augmentation_seed(s, e, i) for s in range(4) for e in range(4) for i in range(4)}
    assert len(seeds) == 64
    assert augmentation_seed(1, 2, 3) != augmentation_seed(3, 2, 1)
    assert all(0 <= s < 2**63 for s in seeds)

"""Shared by the model converters: package files, an idempotent atomic output folder, the CLI."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent

Build = Callable[[Path], None]


def package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package (e.g. the weights of a model package)."""
    path = Path(str(resources.files(package).joinpath(*parts)))
    if not path.is_file():
        raise FileNotFoundError(f"{package} has no file {'/'.join(parts)} (at {path})")
    return path


def is_complete(folder: Path, required: Sequence[str]) -> bool:
    """Whether `folder` already holds every file a finished conversion writes."""
    return folder.is_dir() and all((folder / name).is_file() for name in required)


def convert_once(out: Path, required: Sequence[str], build: Build) -> bool:
    """Run `build` into a temporary sibling of `out`, then rename it into place.

    Skips (returns False) when `out` is already complete; refuses to replace a non-empty folder that
    is not a complete model folder (it is not ours). A failed build leaves nothing behind.
    """
    out = out.resolve()
    if is_complete(out, required):
        print(f"{out}: already converted, skipped")
        return False
    if out.exists():
        if not out.is_dir() or any(out.iterdir()):
            raise SystemExit(f"{out} exists but is not a complete model folder: remove it first")
        out.rmdir()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        missing = [name for name in required if not (tmp / name).is_file()]
        if missing:
            raise RuntimeError(f"conversion wrote no {', '.join(missing)}")
        _chmod_by_umask(tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"{out}: converted")
    return True


def _chmod_by_umask(folder: Path) -> None:
    """Some writers (safetensors) create 0600 files: give every file the umask's usual mode."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def main(name: str, required: Sequence[str], build: Build, description: str,
         argv: Sequence[str] | None = None) -> Path:
    """`python models/convert_X.py [OUT_DIR]`: convert into OUT_DIR (default models/<name>/)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out_dir", nargs="?", type=Path, default=MODELS_DIR / name,
                        help=f"output folder (default: models/{name}/)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    convert_once(args.out_dir, required, build)
    return args.out_dir

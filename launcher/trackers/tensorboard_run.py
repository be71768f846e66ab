"""TensorBoard event files under the run folder's `tensorboard/`, flushed as the job runs.

A resumed run purges what its previous start logged after the checkpoint it resumed from, so
TensorBoard shows each step once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import JobState
from launcher.data.encode.media import Picture, Sound
from launcher.recipe.schema import Recipe

FLUSH_S = 10  # what TensorBoard can read lags the run by at most this


class TensorBoardTracker:
    """A `SummaryWriter` on the run folder's `tensorboard/`."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)

    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A markdown table; each picture or sound under its own tag, `KEY/ROW`."""
        lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        for number, row in enumerate(rows):
            cells = []
            for value in row:
                if isinstance(value, Picture | Sound):
                    self._media(f"{key}/{number}", value, step)
                    value = f"{key}/{number}"
                cells.append(_cell(value))
            lines.append("| " + " | ".join(cells) + " |")
        self.writer.add_text(key, "\n".join(lines), global_step=step)

    def _media(self, tag: str, media: Picture | Sound, step: int) -> None:
        """A picture (its boxes and masks drawn in, true beside predicted), or a sound."""
        if isinstance(media, Picture):
            from launcher.data.encode.annotated import flattened

            self.writer.add_image(tag, flattened(media), global_step=step, dataformats="HWC")
        else:
            import torch

            samples = torch.as_tensor(media.samples, dtype=torch.float32).reshape(1, -1)
            self.writer.add_audio(tag, samples, global_step=step, sample_rate=media.rate)

    def finish(self, files: Sequence[Path], ended: JobState) -> None:
        for path in files:
            if path.suffix == ".png":
                import numpy as np
                from PIL import Image

                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
                self.writer.add_image(path.stem, pixels, dataformats="HWC")
            else:
                self.writer.add_text(path.stem, _code(path.read_text()))
        self.writer.close()


def start_tensorboard(recipe: Recipe, plan: Plan, folder: RunFolder,
                      resumed_step: int) -> TensorBoardTracker:
    """The writer of this run; the recipe and plan as text on its first start."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder.tensorboard), flush_secs=FLUSH_S,
                           purge_step=resumed_step + 1 if resumed_step else None)
    if not resumed_step:
        writer.add_text("recipe", _code(json.dumps(recipe.model_dump(mode="json"), indent=2)))
        writer.add_text("plan", _code(plan.to_json()))
    return TensorBoardTracker(writer)


def _code(text: str) -> str:
    """Text shown as written (TensorBoard renders markdown)."""
    return "\n".join("    " + line for line in text.splitlines())


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")

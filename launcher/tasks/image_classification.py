"""Image classification: fine-tune a pretrained vision model (EfficientNet, ViT, ResNet, ...)
to label images, decoded and augmented in DataLoader workers; accuracy, macro-F1, confusion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from launcher.data.encode.images import (
    Augmentation,
    ImageError,
    augment,
    augmentation_seed,
    contact_sheet,
    open_rgb,
)
from launcher.data.encode.media import THUMBNAIL, Picture
from launcher.data.encode.preview import Preview, Segment, label_name
from launcher.recipe.schema import Recipe
from launcher.tasks.base import Batch, EncodedData, Row
from launcher.tasks.decoded_classification import DecodedClassification, origin


class ImageClassification(DecodedClassification):
    """An image -> one label, any checkpoint `AutoModelForImageClassification` loads."""

    field, auto_model, invalid = "image", AutoModelForImageClassification, ImageError
    model_input = "pixel_values"
    channels_last = False  # set by `load_model`: a convolutional model's pixels go channels-last

    @property
    def augments(self) -> bool:  # type: ignore[override]
        return self.recipe.data.augment is not None

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        """The checkpoint's image processor (resize, crop, rescale, normalise)."""
        return AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)

    @classmethod
    def preview(cls, row: Row, tokenizer: Any, recipe: Recipe, names: list[str]) -> Preview:
        """The image's source, size and label (the loss is on the label)."""
        image = open_rgb(row["image"], origin(row["image"]))
        return Preview([Segment(origin(row["image"]), False)], 0, None,
                       f"{image.width}x{image.height}, label: {label_name(names, row['label'])}")

    @classmethod
    def preview_picture(cls, rows: list[Row], tokenizer: Any, recipe: Recipe,
                        names: list[str], out: Path) -> bool:
        """A contact sheet: each image augmented as in the first epoch ([data.augment]) and
        resized to the processor's size, with its label."""
        size = tokenizer.size or {}
        cell = ((size["width"], size["height"]) if "width" in size
                else (size.get("shortest_edge", 224),) * 2)
        settings = recipe.data.augment
        images = []
        for index, row in enumerate(rows):
            image = open_rgb(row["image"], origin(row["image"]))
            if settings is not None:
                image = augment(image, Augmentation(**settings.model_dump()),
                                augmentation_seed(recipe.train.seed, 0, index))
            images.append(image.resize(cell))
        contact_sheet(images, [label_name(names, row["label"]) for row in rows], out, cell)
        return True

    def media(self, example: dict[str, Any]) -> Picture:
        """The image as in the file (upright RGB), at most THUMBNAIL pixels a side."""
        source = example["path"] or example["bytes"]
        image = open_rgb(source, origin(source))
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        return Picture(np.asarray(image))

    def check(self, source: str | bytes, origin: str) -> dict[str, Any]:
        """The whole image is decoded once: a truncated file fails here, not mid-training."""
        open_rgb(source, origin)
        return {}

    def collate(self, examples: list[dict[str, Any]]) -> Batch:
        """Decode, augment (training rows of a recipe with `[data.augment]`), process."""
        settings = self.recipe.data.augment
        augmentation = Augmentation(**settings.model_dump()) if settings is not None else None
        images = []
        for example in examples:
            source = example["path"] or example["bytes"]
            image = open_rgb(source, origin(source))
            if augmentation is not None and "augment_seed" in example:  # a training row
                image = augment(image, augmentation, example["augment_seed"])
            images.append(image)
        return self.processed(images, [e["labels"] for e in examples]
                              if "labels" in examples[0] else None)

    def example_batch(self, rows: int) -> Batch:
        """`rows` blank images: every image reaches the model at the processor's size."""
        return self.processed([Image.new("RGB", (256, 256))] * rows, [0] * rows)

    def load_model(self, encoded: EncodedData, meta: bool = False) -> torch.nn.Module:
        """The checkpoint with its new head; whether it is convolutional (`channels_last`)."""
        model = super().load_model(encoded, meta)
        self.channels_last = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) > 1
        return model

    def processed(self, images: list[Image.Image], labels: list[int] | None) -> Batch:
        """The batch of these images (resized, cropped and normalised by the processor); for a
        convolutional model in channels-last order, which its convolutions run faster on
        (oneDNN, cuDNN: EfficientNet-Lite0's step took 0.45 s instead of 0.64 on this CPU; a
        vision transformer's one patch convolution is left as it is)."""
        pixels = self.tokenizer(images=images, return_tensors="pt")["pixel_values"]
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        batch = {"pixel_values": pixels}
        if labels is not None:
            batch["labels"] = torch.tensor(labels)
        return batch

"""Semantic segmentation: a class per pixel, any checkpoint `AutoModelForSemanticSegmentation`
loads (SegFormer, MobileNetV2's DeepLabV3, ...), images and class-index masks decoded and moved
together in DataLoader workers; mean IoU, per-class IoU and pixel accuracy over the eval set.

The loss is the model's kind (cross-entropy of the logits upsampled bilinearly to the mask,
`IGNORE` pixels left out), averaged over each image's pixels, then summed over the images:
`loss_sum` returns (sum of per-image means, images), so a step's loss is the mean over its
images however they are split over ranks and micro-batches. Eval scores the logits upsampled to
each mask's own size: one confusion matrix of pixels summed over batches and ranks (`summed`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation

from launcher.data.encode.annotated import annotated
from launcher.data.encode.images import (
    Augmentation,
    ImageError,
    augmentation_seed,
    contact_sheet,
    open_rgb,
)
from launcher.data.encode.masks import (
    IGNORE,
    MaskError,
    augment_pair,
    check_mask,
    class_names_beside,
    classes_in,
    mask_png,
    model_size,
    open_mask,
    overlay,
    resize_pair,
)
from launcher.data.encode.media import Layer
from launcher.data.encode.preview import Preview, Segment
from launcher.data.errors import DataError
from launcher.data.hub_data import is_hub_data
from launcher.data.splits import load_splits
from launcher.recipe.schema import Recipe
from launcher.tasks.base import Batch, EncodedData, EvalOutput, Example, Row
from launcher.tasks.decoded_classification import file_example, origin, refuse_or_skip
from launcher.tasks.file_task import FileTask
from launcher.tasks.pixel_scores import confusion, image_loss, scores, upsampled
from launcher.tasks.pretrained import pretrained


class SemanticSegmentation(FileTask):
    """An image -> a class id per pixel. Label names: `task.label_names`, else the
    `class_names.txt` beside the data, else "0".."n-1" (`task.num_labels`, or the largest mask
    value + 1)."""

    augments = True  # training rows come with an "augment_seed" (augmented or not): resized
    predicts_shown = True  # eval sums pixels: the rows the trackers show are predicted again
    names: list[str]
    palette: list[int] | None = None  # the training masks' palette: predicted PNGs get it

    @property
    def summed(self) -> tuple[str, ...]:  # type: ignore[override]
        """The confusion matrix's cells, "true,predicted", pixels summed over all ranks."""
        n = len(getattr(self, "names", ()))
        return tuple(f"{t},{p}" for t in range(n) for p in range(n))

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        return AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)

    @classmethod
    def preview(cls, row: Row, tokenizer: Any, recipe: Recipe, names: list[str]) -> Preview:
        """The image's source and size, and the classes its mask holds."""
        image, names = open_rgb(row["image"], origin(row["image"])), names or named_classes(recipe)
        note = f"{image.width}x{image.height}"
        if "mask" in row:
            mask = open_mask(row["mask"], origin(row["mask"]))[0]
            note += f", classes: {classes_in(mask, names)}"
        return Preview([Segment(origin(row["image"]), False)], 0, None, note)

    @classmethod
    def preview_picture(cls, rows: list[Row], tokenizer: Any, recipe: Recipe,
                        names: list[str], out: Path) -> bool:
        """A contact sheet: each image and its mask augmented as in the first epoch, at the
        processor's size, the mask's classes tinted over the image (ignored pixels not)."""
        settings, names = recipe.data.augment, names or named_classes(recipe)
        size, pictures, captions = model_size(tokenizer), [], []
        for index, row in enumerate(rows):
            image = open_rgb(row["image"], origin(row["image"]))
            mask, palette = open_mask(row["mask"], origin(row["mask"]))
            if settings is not None:
                image, mask = augment_pair(image, mask, Augmentation(**settings.model_dump()),
                                           augmentation_seed(recipe.train.seed, 0, index))
            image, mask = resize_pair(image, mask, size)
            pictures.append(overlay(image, mask, palette))
            captions.append(classes_in(mask, names))
        contact_sheet(pictures, captions, out, size)
        return True

    def encode_data(self, tokenizer: Any) -> EncodedData:
        """Rows whose image and mask are usable (each checked once now: a bad pair is named
        here, or skipped and counted under `data.on_bad_row = "skip"`)."""
        self.tokenizer = tokenizer
        splits = load_splits(self.recipe)
        self.names = self.label_names(splits.train)
        skipped: list[DataError] = []
        train = self.encode(splits.train, skipped)
        evaluation = self.encode(splits.eval, skipped)
        stats = type(splits.stats)(train_rows=len(train), eval_rows=len(evaluation),
                                   skipped_rows=splits.stats.skipped_rows + len(skipped))
        return EncodedData(train=train, eval=evaluation, label_names=self.names, stats=stats)

    def label_names(self, rows: list[Row]) -> list[str]:
        """`task.label_names`, the first source's class_names.txt, `task.num_labels`, or the
        largest class id in the masks."""
        if names := named_classes(self.recipe):
            return names
        count = self.recipe.task.num_labels or 1 + max(
            (int(v) for row in rows for v in np.unique(open_mask(row["mask"], origin(
                row["mask"]))[0]) if v != IGNORE), default=1)
        return [str(i) for i in range(count)]

    def classes(self) -> int:
        """Class count: the names learnt from the data, else the model's (eval, predict)."""
        if not hasattr(self, "names"):
            config = AutoConfig.from_pretrained(self.plan.model_path,
                                                trust_remote_code=self.recipe.model.trust_remote_code)
            self.names = [config.id2label[i] for i in range(len(config.id2label))]
        return len(self.names)

    def encode(self, rows: list[Row], skipped: list[DataError] | None = None) -> list[Example]:
        """Each row's image (and mask) checked: decodable, the same size, known class ids."""
        examples = []
        for done, row in enumerate(rows, 1):
            try:  # a bad mask is named by its file, a bad image by its own
                image = open_rgb(row["image"], origin(row["image"]))
                if "mask" in row:
                    mask, _ = open_mask(row["mask"], origin(row["mask"]))
                    check_mask(mask, image.size, self.classes(), origin(row["mask"]))
            except (ImageError, MaskError) as err:
                bad = row["mask"] if isinstance(err, MaskError) else row["image"]
                refuse_or_skip(err, bad, self.recipe.data.on_bad_row, skipped)
                continue
            examples.append({**file_example(row["image"]),
                             **({f"mask_{k}": v for k, v in file_example(row["mask"]).items()}
                                if "mask" in row else {})})
            if done % 256 == 0:
                self.report_progress("images checked", done, len(rows))
        return examples

    def load_model(self, encoded: EncodedData, meta: bool = False) -> torch.nn.Module:
        """The checkpoint with a head of the data's classes (named in its config), and the
        training masks' palette (`mask_palette` in the config, for `predict`'s PNGs)."""
        self.names = names = list(encoded.label_names or [])
        model = pretrained(AutoModelForSemanticSegmentation, self.recipe, self.plan, meta,
                           new_head=True, num_labels=len(names), id2label=dict(enumerate(names)),
                           label2id={n: i for i, n in enumerate(names)})
        if encoded.train and (palette := open_mask(*mask_source(encoded.train[0]))[1]):
            model.config.mask_palette = palette  # saved with the config; `predict` reads it
        self.palette = getattr(model.config, "mask_palette", None)
        return model

    def collate(self, examples: list[dict[str, Any]]) -> Batch:
        """Decode; training rows augmented ([data.augment]) and resized with their masks to
        the model's size; other rows keep their masks at full size (padded with `IGNORE`),
        their sizes in "sizes"."""
        settings = self.recipe.data.augment
        size = model_size(self.tokenizer)
        training = "augment_seed" in examples[0]
        images, masks, sizes = [], [], []
        for example in examples:
            source = example["path"] or example["bytes"]
            image = open_rgb(source, origin(source))
            mask = (open_mask(*mask_source(example))[0]
                    if example.get("mask_path") or example.get("mask_bytes") else None)
            if settings is not None and training and mask is not None:
                image, mask = augment_pair(image, mask, Augmentation(**settings.model_dump()),
                                           example["augment_seed"])
            sizes.append((image.height, image.width))
            if training:
                image, mask = resize_pair(image, mask, size)
            else:
                image, _ = resize_pair(image, None, size)
            images.append(image)
            masks.append(mask)
        return self.processed(images, masks, None if training else sizes)

    def processed(self, images: list[Image.Image], masks: list[np.ndarray | None],
                  sizes: list[tuple[int, int]] | None) -> Batch:
        """Pixels normalised by the processor (already at its size); the masks as "labels"
        (padded to the largest with `IGNORE`); the original sizes unless training."""
        pixels = self.tokenizer(images=images, do_resize=False, do_center_crop=False,
                                return_tensors="pt")["pixel_values"]
        batch: Batch = {"pixel_values": pixels}
        if masks and masks[0] is not None:
            height, width = (max(m.shape[i] for m in masks) for i in (0, 1))
            labels = torch.full((len(masks), height, width), IGNORE, dtype=torch.long)
            for i, mask in enumerate(masks):
                labels[i, :mask.shape[0], :mask.shape[1]] = torch.from_numpy(mask.astype(np.int64))
            batch["labels"] = labels
        if sizes is not None:
            batch["sizes"] = torch.tensor(sizes, dtype=torch.long)
        return batch

    def example_batch(self, rows: int) -> Batch:
        """`rows` blank images and masks at the processor's size, as training batches them."""
        size = model_size(self.tokenizer)
        blank = np.zeros((size[1], size[0]), dtype=np.uint8)
        return self.processed([Image.new("RGB", size)] * rows, [blank] * rows, None)

    def logits(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return model(pixel_values=batch["pixel_values"]).logits.float()

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        """Each image's mean pixel loss, summed; the number of images."""
        logits, labels = self.logits(model, batch), batch["labels"]
        if "sizes" in batch:  # full-size masks: each image at its own size
            per_image = [image_loss(logits[i], labels[i, :h, :w])
                         for i, (h, w) in enumerate(batch["sizes"].tolist())]
            return torch.stack(per_image).sum(), len(per_image)
        upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear",
                                  align_corners=False)
        pixels = F.cross_entropy(upsampled, labels, ignore_index=IGNORE, reduction="none")
        valid = (labels != IGNORE).sum((1, 2)).clamp(min=1)
        return (pixels.sum((1, 2)) / valid).sum(), int(labels.shape[0])

    def masks(self, model: torch.nn.Module, batch: Batch) -> list[torch.Tensor]:
        """Each image's predicted class ids at its own size (logits upsampled bilinearly)."""
        logits = self.logits(model, batch)
        return [upsampled(logits[i], h, w).argmax(0)
                for i, (h, w) in enumerate(batch["sizes"].tolist())]

    def evaluate(self, model: torch.nn.Module, batch: Batch) -> EvalOutput:
        """The images' summed loss and the confusion matrix of their pixels."""
        n, labels = len(self.names), batch["labels"]
        loss, count = self.loss_sum(model, batch)
        cells = sum(confusion(labels[i, :mask.shape[0], :mask.shape[1]], mask, n)
                    for i, mask in enumerate(self.masks(model, batch)))
        return EvalOutput(loss_sum=float(loss), count=count,
                          sums=dict(zip(self.summed, map(float, cells.tolist()), strict=True)))

    def metrics(self, loss_sum: float, count: int, predictions: list[Any],
                references: list[Any], sums: dict[str, float] | None = None) -> dict[str, Any]:
        """Mean IoU (over the classes present in the masks or the predictions), pixel accuracy,
        mean class accuracy, and per-class IoU; the same figures as `evaluate`'s mean_iou."""
        n = len(self.names)
        cells = np.array([(sums or {}).get(key, 0.0) for key in self.summed]).reshape(n, n)
        return {"loss": loss_sum / max(count, 1), **scores(cells, self.names)}

    def predict(self, model: torch.nn.Module, batch: Batch, max_new_tokens: int,
                synced: bool = False) -> list[np.ndarray]:
        """Each image's mask of class ids, at the image's size."""
        return [m.to(torch.uint8).cpu().numpy() for m in self.masks(model, batch)]

    def shown(self, example: Example, reference: Any, prediction: np.ndarray) -> list[Any]:
        """The image with its true mask and the predicted one (W&B's two layers; the other
        trackers tint them side by side); the classes each holds."""
        source, truth = example["path"] or example["bytes"], open_mask(*mask_source(example))[0]
        picture = annotated(open_rgb(source, origin(source)), self.names,
                            masks={Layer.TRUE: truth, Layer.PREDICTED: prediction})
        return [picture, classes_in(truth, self.names), classes_in(prediction, self.names)]

    def reference(self, row: Row) -> Any:
        return row["mask"] if isinstance(row.get("mask"), str) else None

    def written(self, predicted: list[Any], rows: list[Row], folder: Path) -> list[Any]:
        """Each mask as a PNG in `folder` (named by its image, the training masks' palette if
        they had one, else greyscale): the predictions are the PNGs' paths."""
        folder.mkdir(parents=True, exist_ok=True)
        stems = [Path(r["image"]).stem if isinstance(r["image"], str) else "" for r in rows]
        unique = len(set(stems)) == len(stems) and all(stems)
        paths = []
        for index, (mask, stem) in enumerate(zip(predicted, stems, strict=True)):
            path = folder / (f"{stem}.png" if unique else f"{index:06d}.png")
            path.write_bytes(mask_png(mask, self.palette))
            paths.append(str(path))
        return paths


def named_classes(recipe: Recipe) -> list[str]:
    """The class names a recipe gives: `task.label_names`, else the first training source's
    class_names.txt; none otherwise (`preview` shows the ids then)."""
    first = recipe.data.train[0]
    names = recipe.task.label_names or (None if is_hub_data(first) else class_names_beside(first))
    return list(names or [])


def mask_source(example: Example) -> tuple[str | bytes, str]:
    """An example's mask file (its path, or its bytes) and how it is named in messages."""
    source = example["mask_path"] or example["mask_bytes"]
    return source, origin(source)

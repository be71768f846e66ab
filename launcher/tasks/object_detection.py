"""Object detection: fine-tune any transformers detector (DETR, Conditional DETR, YOLOS, ...)
to box and label objects; images decoded and augmented (boxes moved with the pixels) in
DataLoader workers; the model's own loss (Hungarian matching); COCO mAP by pycocotools."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForObjectDetection

from launcher.data.encode.annotated import annotated
from launcher.data.encode.boxes import augment_boxes, drawn
from launcher.data.encode.images import (
    Augmentation,
    ImageError,
    augmentation_seed,
    contact_sheet,
    open_rgb,
)
from launcher.data.encode.masks import model_size, size_field
from launcher.data.encode.media import Box, Layer
from launcher.data.encode.preview import Preview, Segment, label_name
from launcher.data.errors import DataError
from launcher.recipe.schema import Recipe
from launcher.tasks.base import Batch, EncodedData, EvalOutput, Example, Row
from launcher.tasks.box_metrics import Detection, coco_scores
from launcher.tasks.decoded_classification import file_example, origin, refuse_or_skip
from launcher.tasks.file_task import FileTask
from launcher.tasks.pretrained import pretrained

PREDICT_THRESHOLD = 0.5  # `predict` keeps the detections scored at least this
MODEL_INPUTS = ("pixel_values", "pixel_mask")  # what a detector may take of a batch


class ObjectDetection(FileTask):
    """Images -> boxes with labels, any checkpoint `AutoModelForObjectDetection` loads."""

    collective_forward = True  # the loss all-reduces the batch's box count over the ranks
    accepts: frozenset[str] = frozenset(MODEL_INPUTS)  # set by `load_model`

    @property
    def augments(self) -> bool:  # type: ignore[override]
        return self.recipe.data.augment is not None

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        """The checkpoint's image processor (resize, normalise, pad; boxes normalised)."""
        return AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)

    @classmethod
    def preview(cls, row: Row, tokenizer: Any, recipe: Recipe, names: list[str]) -> Preview:
        """The image's source, size and boxes (the loss is on the boxes)."""
        image = open_rgb(row["image"], origin(row["image"]))
        boxes = "; ".join(f"{label_name(names, c)} {[round(v) for v in box]}"
                          for box, c in zip(row.get("boxes", []), row.get("label", []),
                                            strict=True))
        return Preview([Segment(origin(row["image"]), False)], 0, None,
                       f"{image.width}x{image.height}, {counted(len(row.get('boxes', [])))}"
                       + (f": {boxes}" if boxes else ""))

    @classmethod
    def preview_picture(cls, rows: list[Row], tokenizer: Any, recipe: Recipe,
                        names: list[str], out: Path) -> bool:
        """A contact sheet: each image augmented as in the first epoch ([data.augment]), its
        boxes drawn with their class names."""
        size = tokenizer.size or {}
        side = min(size.get("shortest_edge") or size.get("height") or 256, 320)
        settings = recipe.data.augment
        pictures, captions = [], []
        for index, row in enumerate(rows):
            image = open_rgb(row["image"], origin(row["image"]))
            boxes, classes = row.get("boxes", []), row.get("label", [])
            if settings is not None:
                image, boxes, classes = augment_boxes(
                    image, boxes, classes, Augmentation(**settings.model_dump()),
                    augmentation_seed(recipe.train.seed, 0, index))
            pictures.append(drawn(image, boxes, [label_name(names, c) for c in classes],
                                  (side, side)))
            captions.append(counted(len(boxes)))
        contact_sheet(pictures, captions, out, (side, side))
        return True

    def encode(self, rows: list[Row], skipped: list[DataError] | None = None) -> list[Example]:
        """Where each image is, its size, and its boxes and label ids when it has them."""
        examples = []
        for done, row in enumerate(rows, 1):
            source = row["image"]
            try:
                image = open_rgb(source, origin(source))
            except ImageError as err:
                refuse_or_skip(err, source, self.recipe.data.on_bad_row, skipped)
                continue
            labelled = {"boxes": row["boxes"], "classes": row["label"]} if "boxes" in row else {}
            examples.append({**file_example(source), "width": image.width,
                             "height": image.height, **labelled})
            if done % 256 == 0:
                self.report_progress("images checked", done, len(rows))
        return examples

    def load_model(self, encoded: EncodedData, meta: bool = False) -> torch.nn.Module:
        """The checkpoint with a new class head sized from the label names (saved in its
        config); which of `MODEL_INPUTS` its forward takes (DETR a pixel mask, YOLOS not)."""
        self.names = names = list(encoded.label_names or [])
        model = pretrained(AutoModelForObjectDetection, self.recipe, self.plan, meta,
                           new_head=True, id2label=dict(enumerate(names)),
                           label2id={n: i for i, n in enumerate(names)})
        self.accepts = frozenset(inspect.signature(model.forward).parameters) & set(MODEL_INPUTS)
        return model

    def collate(self, examples: list[dict[str, Any]]) -> Batch:
        """Decode, augment (training rows of a recipe with `[data.augment]`) with the boxes,
        then the processor: resized, normalised and padded pixels (and their mask), the boxes
        as the model takes them ("labels": a dict of tensors per image), and each image's
        size to post-process to (its original pixels, padding included)."""
        settings = self.recipe.data.augment
        augmentation = Augmentation(**settings.model_dump()) if settings is not None else None
        images, annotations = [], []
        for example in examples:
            source = example["path"] or example["bytes"]
            image = open_rgb(source, origin(source))
            boxes, classes = example.get("boxes", []), example.get("classes", [])
            if augmentation is not None and "augment_seed" in example:  # a training row
                image, boxes, classes = augment_boxes(image, boxes, classes, augmentation,
                                                      example["augment_seed"])
            images.append(image)
            annotations.append((boxes, classes))
        return self.processed(images, annotations if "boxes" in examples[0] else None)

    def processed(self, images: list[Any],
                  boxed: list[tuple[list[list[float]], list[int]]] | None) -> Batch:
        """The processor's batch of these images and, when given, their boxes ([x0, y0, x1, y1]
        pixels) and class ids."""
        annotations = None if boxed is None else [{"image_id": index, "annotations": [
            {"bbox": [x0, y0, x1 - x0, y1 - y0], "category_id": c,
             "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
            for (x0, y0, x1, y1), c in zip(boxes, classes, strict=True)]}
            for index, (boxes, classes) in enumerate(boxed)]
        out = self.tokenizer(images=images, annotations=annotations, return_tensors="pt")
        batch: Batch = {k: out[k] for k in MODEL_INPUTS if k in out}
        batch["target_sizes"] = target_sizes(images, out)
        if annotations is not None:
            batch["labels"] = [{"class_labels": t["class_labels"], "boxes": t["boxes"]}
                               for t in out["labels"]]
        return batch

    def example_batch(self, rows: int) -> Batch:
        """`rows` blank images of the largest canvas the processor makes (its shortest edge by
        its longest), a box on each, as training batches them."""
        width, height = largest_canvas(self.tokenizer)
        box = ([[0.0, 0.0, width / 2, height / 2]], [0])
        return self.processed([Image.new("RGB", (width, height))] * rows, [box] * rows)

    def forward(self, model: torch.nn.Module, batch: Batch) -> Any:
        """The model on the inputs it takes (and the boxes, when the batch has them)."""
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch and k in self.accepts}
        return model(**inputs, **({"labels": batch["labels"]} if "labels" in batch else {}))

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        """The model's loss (normalised by the boxes of the batch, averaged over the ranks)
        times the batch's images, which the loop sums into a mean over images."""
        images = len(batch["labels"])
        return self.forward(model, batch).loss * images, images

    def detections(self, outputs: Any, batch: Batch, threshold: float) -> list[list[Detection]]:
        """Each image's detections scored `threshold` or more, boxes in original pixels."""
        found = self.tokenizer.post_process_object_detection(
            outputs, threshold=threshold, target_sizes=batch["target_sizes"].cpu())
        return [[self.detection(box, int(label), float(score))
                 for box, label, score in zip(r["boxes"].float().tolist(), r["labels"].tolist(),
                                              r["scores"].float().tolist(), strict=True)]
                for r in found]

    def detection(self, box: list[float], label: int, score: float | None = None) -> Detection:
        """One box, COCO's way ([x, y, width, height], pixels), with its class id and name."""
        x0, y0, x1, y1 = box
        found = {"label": label_name(getattr(self, "names", []), label), "category_id": label,
                 "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]}
        return found if score is None else {**found, "score": round(score, 4)}

    def predict(self, model: torch.nn.Module, batch: Batch, max_new_tokens: int,
                synced: bool = False) -> list[list[Detection]]:
        """Each image's detections scored PREDICT_THRESHOLD or more."""
        return self.detections(self.forward(model, batch), batch, PREDICT_THRESHOLD)

    def shown(self, example: Example, reference: list[Detection],
              prediction: list[Detection]) -> list[Any]:
        """The image with its true boxes and its detections scored PREDICT_THRESHOLD or more
        (W&B's two layers; the other trackers draw them side by side); both as text."""
        source = example["path"] or example["bytes"]
        kept = [d for d in prediction if d["score"] >= PREDICT_THRESHOLD]
        picture = annotated(open_rgb(source, origin(source)), getattr(self, "names", []),
                            boxes={Layer.TRUE: boxed(reference), Layer.PREDICTED: boxed(kept)})
        return [picture, described(reference), described(kept)]

    def reference(self, row: Row) -> list[Detection]:
        return [self.detection(box, c) for box, c in zip(row["boxes"], row["label"],
                                                           strict=True)]

    def evaluate(self, model: torch.nn.Module, batch: Batch) -> EvalOutput:
        """The loss, every detection (threshold 0: mAP ranks them all) and the true boxes."""
        outputs = self.forward(model, batch)
        images = len(batch["labels"])
        truth = []
        for target, (height, width) in zip(batch["labels"], batch["target_sizes"].tolist(),
                                           strict=True):
            scale = torch.tensor([width, height, width, height], dtype=torch.float32)
            boxes = target["boxes"].float().cpu() * scale  # normalised cx, cy, w, h -> pixels
            truth.append([self.detection([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], c)
                          for (cx, cy, w, h), c in zip(boxes.tolist(),
                                                       target["class_labels"].tolist(),
                                                       strict=True)])
        return EvalOutput(loss_sum=float(outputs.loss) * images, count=images,
                          predictions=self.detections(outputs, batch, 0.0), references=truth)

    def metrics(self, loss_sum: float, count: int, predictions: list[Any],
                references: list[Any], sums: dict[str, float] | None = None) -> dict[str, Any]:
        """COCO mAP, mAP@50, mAP@75 and the per-class AP table (`per_class`)."""
        scores: dict[str, Any] = {"loss": loss_sum / max(count, 1)}
        if references:
            scores.update(coco_scores(predictions, references, getattr(self, "names", [])))
        return scores


def counted(boxes: int) -> str:
    return f"{boxes} box" if boxes == 1 else f"{boxes} boxes"


def boxed(detections: list[Detection]) -> tuple[Box, ...]:
    """COCO detections ([x, y, width, height] pixels) as boxes on their image."""
    return tuple(Box((x, y, x + w, y + h), d["category_id"], d.get("score"))
                 for d in detections for x, y, w, h in [d["bbox"]])


def described(detections: list[Detection]) -> str:
    """"2 boxes: raccoon 0.91, raccoon 0.62": the count, each box's class (and score)."""
    named = [d["label"] + (f" {d['score']:.2f}" if "score" in d else "") for d in detections]
    return counted(len(detections)) + (": " + ", ".join(named) if named else "")


def largest_canvas(processor: Any) -> tuple[int, int]:
    """(width, height) of the largest image the processor makes: its longest edge by its
    shortest (DETR's 1333 x 800), or its fixed size."""
    shortest, longest = (size_field(processor.size, key)
                         for key in ("shortest_edge", "longest_edge"))
    if shortest and longest:
        return int(longest), int(shortest)
    return model_size(processor)


def target_sizes(images: list[Any], processed: Any) -> torch.Tensor:
    """(height, width) per image that the model's normalised boxes scale to, in the image's
    own pixels: its size grown by the share of the processed canvas that is padding (the
    processor normalises boxes to the padded canvas); its size where nothing is padded."""
    sizes = torch.tensor([[image.height, image.width] for image in images], dtype=torch.float32)
    mask = processed.get("pixel_mask")
    if mask is None:
        return sizes
    canvas = torch.tensor(mask.shape[-2:], dtype=torch.float32)
    filled = torch.stack([mask.any(-1).sum(-1), mask.any(-2).sum(-1)], -1).float()
    return sizes * canvas / filled

"""What semantic segmentation computes per pixel: the loss of one image's logits upsampled to its
mask, and mean IoU, pixel accuracy and per-class IoU of a confusion matrix, the figures of
`evaluate`'s mean_iou (a class in neither the masks nor the predictions is left out, as its NaN
is there)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from launcher.data.encode.masks import IGNORE


def confusion(truth: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """The confusion matrix (true class by row), flat, of one mask's pixels not `IGNORE`."""
    valid = truth != IGNORE
    return torch.bincount(truth[valid] * classes + predicted[valid], minlength=classes ** 2)


def scores(confusion: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Mean IoU, pixel accuracy, mean accuracy, and per class its IoU, accuracy and pixels in
    the masks, of a confusion matrix (true class by row); classes in neither the masks nor the
    predictions are left out (evaluate's NaN, which its means skip)."""
    hits = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - hits
    truth = confusion.sum(1)
    present = union > 0
    iou = np.divide(hits, union, out=np.zeros_like(hits), where=present)
    accuracy = np.divide(hits, truth, out=np.zeros_like(hits), where=truth > 0)
    return {"mean_iou": float(iou[present].mean()) if present.any() else 0.0,
            "pixel_accuracy": float(hits.sum() / max(confusion.sum(), 1)),
            "mean_accuracy": float(accuracy[truth > 0].mean()) if (truth > 0).any() else 0.0,
            "per_class": {names[i]: {"iou": float(iou[i]), "accuracy": float(accuracy[i]),
                                     "pixels": float(truth[i])} for i in np.flatnonzero(present)}}


def upsampled(logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """One image's logits (classes, h, w) resized bilinearly to (height, width)."""
    return F.interpolate(logits[None], size=(height, width), mode="bilinear",
                         align_corners=False)[0]


def image_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy over one image's pixels not `IGNORE` (0 with none)."""
    pixels = F.cross_entropy(upsampled(logits, *mask.shape)[None], mask[None],
                             ignore_index=IGNORE, reduction="sum")
    return pixels / (mask != IGNORE).sum().clamp(min=1)

"""`sft-launch lr-find`: plan an lr range test of a recipe, then read its curve back into a
suggested `train.lr`, `lr_find.json` and `lr_find.png` (the control plane's half, no torch)."""

from __future__ import annotations

from launcher.contract.reports import LrCurve, LrFindResult
from launcher.contract.run_folder import RunFolder
from launcher.planner.lr_range import smoothed, suggest
from launcher.ui.pictures import draw_lr_find


def conclude(folder: RunFolder, title: str) -> LrFindResult:
    """The suggestion from the workers' curve; writes lr_find.json and lr_find.png."""
    curve = LrCurve.read(folder.lr_curve)
    smooth = smoothed(curve.losses)
    suggestion = suggest(curve.lrs, curve.losses)
    result = LrFindResult(lrs=curve.lrs, losses=curve.losses, smoothed=tuple(smooth),
                          suggested_lr=suggestion.lr, method=suggestion.method)
    result.write(folder.lr_find)
    draw_lr_find(result, folder.lr_find.with_suffix(".png"), title)
    return result

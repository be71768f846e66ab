"""The pictures people look at instead of reading: `report.png` of a run (train loss, eval
metrics, lr, tokens/s against steps; the confusion matrix of a classification run; rows of eval
images with their boxes or masks, true beside predicted, of a detection or segmentation run) and
`sweep.png` of a sweep (the metric against each swept setting). Each is drawn from a JSON file
beside it, so what it shows can be checked. matplotlib, no torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from launcher.contract.evaluation import Prediction
from launcher.contract.events import Evaluated, TrainLogged, read_events
from launcher.contract.reports import Confusion, LabelNames, LrFindResult, ReportData, Series
from launcher.contract.run_folder import RunFolder

FIGURE_DPI = 100
SPAN = 12  # grid columns of report.png: 2 or 3 curve panels, each an equal part
PICTURES_PER_ROW = 2  # eval pictures (true beside predicted: wide) in a row below the curves
PICTURE_ROW_INCHES = 2.6


def report_data(folder: RunFolder) -> ReportData:
    """The run's curves from its event log (a step logged again after a resume: its last value),
    the confusion matrix from its final eval predictions (classification runs), and the final
    eval's pictures with boxes or masks (detection, segmentation runs)."""
    train: dict[int, TrainLogged] = {}
    evals: dict[str, dict[int, float]] = {}
    for event in read_events(folder.events):
        if isinstance(event, TrainLogged):
            train[event.step] = event
        elif isinstance(event, Evaluated):
            for name, value in event.metrics.items():
                evals.setdefault(name, {})[event.step] = value
    steps = sorted(train)

    def series(values: dict[int, float | None]) -> Series:
        kept = [(s, v) for s, v in sorted(values.items()) if v is not None]
        return Series(steps=tuple(s for s, _ in kept), values=tuple(v for _, v in kept))

    return ReportData(
        train_loss=series({s: train[s].loss for s in steps}),
        lr=series({s: train[s].lr for s in steps}),
        tokens_per_s=series({s: train[s].tokens_per_s for s in steps}),
        eval={name: series(values) for name, values in evals.items()},
        confusion=_confusion(folder),
        examples=tuple(folder.named(path) for path in sorted(
            folder.eval_examples.glob("*.png"), key=lambda path: int(path.stem))),
    )


def _confusion(folder: RunFolder) -> Confusion | None:
    """Label names and one label predicted per eval row: their counts; None otherwise (no
    names, no rows: segmentation, tokens or boxes per row)."""
    names = LabelNames.read_if_exists(folder.label_names)
    rows = Prediction.read_lines(folder.predictions)
    if names is None or not rows:
        return None
    index = {name: i for i, name in enumerate(names.names)}
    counts = [[0] * len(names.names) for _ in names.names]
    for row in rows:
        if not (isinstance(row.prediction, str) and isinstance(row.reference, str)):
            return None  # not one label per row (token classification)
        counts[index[row.reference]][index[row.prediction]] += 1
    return Confusion(labels=names.names, counts=tuple(tuple(row) for row in counts))


def draw_report(data: ReportData, path: Path, title: str) -> None:
    """report.png: one panel per curve, the confusion matrix when there is one, and rows of
    the eval pictures (`data.examples`, in the run folder beside `path`) when there are some."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = [("train loss", {"loss": data.train_loss}), ("eval", data.eval),
              ("learning rate", {"lr": data.lr}),
              ("real tokens/s", {"tokens/s": data.tokens_per_s})]
    columns = 3 if data.confusion else 2
    shown = [path.parent / name for name in data.examples]
    below = -(-len(shown) // PICTURES_PER_ROW)  # rows of pictures
    figure = plt.figure(figsize=(5 * columns, 7 + PICTURE_ROW_INCHES * below), dpi=FIGURE_DPI)
    grid = figure.add_gridspec(2 + below, SPAN,
                               height_ratios=[3.5, 3.5] + [PICTURE_ROW_INCHES] * below)
    axes = [[figure.add_subplot(grid[row, c * SPAN // columns:(c + 1) * SPAN // columns])
             for c in range(columns)] for row in range(2)]
    cells = [axes[0][0], axes[0][1], axes[1][0], axes[1][1]]
    for axis, (name, curves) in zip(cells, panels, strict=True):
        for label, curve in curves.items():
            axis.plot(curve.steps, curve.values, marker="o" if len(curve.steps) < 20 else None,
                      label=label)
        axis.set_title(name)
        axis.set_xlabel("optimizer step")
        if len(curves) > 1 or name == "eval":
            axis.legend(fontsize="small")
        if not any(curve.steps for curve in curves.values()):
            axis.text(0.5, 0.5, "not measured", ha="center", va="center",
                      transform=axis.transAxes)
    if data.confusion:
        _draw_confusion(axes[0][2], data.confusion)
        axes[1][2].axis("off")
    width = SPAN // PICTURES_PER_ROW
    for number, picture in enumerate(shown):
        row, place = divmod(number, PICTURES_PER_ROW)
        _draw_example(figure.add_subplot(grid[2 + row, place * width:(place + 1) * width]),
                      picture, number)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _draw_confusion(axis: object, confusion: Confusion) -> None:
    axis.imshow(confusion.counts, cmap="Blues")
    ticks = range(len(confusion.labels))
    axis.set_xticks(ticks, confusion.labels, rotation=45, ha="right", fontsize="small")
    axis.set_yticks(ticks, confusion.labels, fontsize="small")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("confusion (final eval)")
    for row, counts in enumerate(confusion.counts):
        for column, count in enumerate(counts):
            axis.text(column, row, str(count), ha="center", va="center", fontsize="small")


def _draw_example(axis: object, picture: Path, number: int) -> None:
    from matplotlib import pyplot as plt

    axis.imshow(plt.imread(picture))
    axis.set_title(f"eval image {number}: true | predicted", fontsize="small")
    axis.axis("off")


def write_report(folder: RunFolder, title: str) -> None:
    """report.json, then report.png drawn from it (and the eval pictures it names)."""
    data = report_data(folder)
    data.write(folder.report_data)
    draw_report(data, folder.report, title)


def draw_sweep(metric: str, points: Sequence[tuple[dict[str, str], float | None]],
               path: Path, title: str) -> None:
    """sweep.png: the metric of each point against each swept key's value."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    keys = sorted({key for settings, _ in points for key in settings})
    figure, axes = plt.subplots(1, max(len(keys), 1), figsize=(5 * max(len(keys), 1), 4),
                                dpi=FIGURE_DPI, squeeze=False)
    for axis, key in zip(axes[0], keys, strict=False):
        values = sorted({settings[key] for settings, _ in points}, key=_numeric_first)
        for settings, score in points:
            if score is not None:
                axis.scatter(values.index(settings[key]), score, color="tab:blue")
        axis.set_xticks(range(len(values)), values, rotation=30, ha="right", fontsize="small")
        axis.set_xlabel(key)
        axis.set_ylabel(metric)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _numeric_first(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def draw_lr_find(result: LrFindResult, path: Path, title: str) -> None:
    """lr_find.png: the loss against the lr (log axis), smoothed, the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=FIGURE_DPI)
    axis.plot(result.lrs, result.losses, color="lightgray", label="loss")
    axis.plot(result.lrs, result.smoothed, color="tab:blue", label="smoothed loss")
    index = result.lrs.index(result.suggested_lr) if result.suggested_lr in result.lrs else None
    axis.axvline(result.suggested_lr, color="tab:red", linestyle="--",
                 label=f"suggested {result.suggested_lr:.2e} ({result.method})")
    if index is not None:
        axis.plot([result.suggested_lr], [result.smoothed[index]], "o", color="tab:red")
    axis.set_xscale("log")
    low, first = min(result.smoothed), result.smoothed[0]
    axis.set_ylim(low - 0.05 * abs(low), max(2 * first, low + 1e-6))  # the divergence off-scale
    axis.set_xlabel("learning rate")
    axis.set_ylabel("training loss")
    axis.legend(fontsize="small")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)

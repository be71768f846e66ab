"""What the tasks whose examples are files share (image and audio classification, object
detection, semantic segmentation): each file checked once when the data is encoded, decoded in
`collate` (DataLoader workers), and counted as one unit of work, not in tokens."""

from __future__ import annotations

from typing import Any

from launcher.data.errors import DataError
from launcher.data.splits import load_splits
from launcher.tasks.base import Batch, EncodedData, Task


class FileTask(Task):
    """A task whose rows name a file (or hold its bytes). A subclass's `encode(rows, skipped)`
    checks each file, raising for a bad one or adding it to `skipped` (a list of DataError)."""

    decodes = True
    model_input = "pixel_values"  # the model's keyword for a batch's files

    def encode_data(self, tokenizer: Any) -> EncodedData:
        """Rows whose file is usable (each checked once now: a bad file is named here, or
        skipped and counted under `data.on_bad_row = "skip"`, never met mid-training)."""
        self.tokenizer = tokenizer
        splits = load_splits(self.recipe)
        skipped: list[DataError] = []
        train = self.encode(splits.train, skipped)
        evaluation = self.encode(splits.eval, skipped)
        names = list(splits.label_map.names) if splits.label_map is not None else None
        stats = type(splits.stats)(train_rows=len(train), eval_rows=len(evaluation),
                                   skipped_rows=splits.stats.skipped_rows + len(skipped))
        return EncodedData(train=train, eval=evaluation, label_names=names, stats=stats)

    def tokens_in(self, example: dict[str, Any]) -> int:
        return 1  # a file is one unit of work

    def computed_in(self, batch: Batch) -> int:
        return int(batch[self.model_input].shape[0])

    def computed_tokens(self, examples: Any) -> int:
        return len(examples)

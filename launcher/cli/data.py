"""Commands about data: preview (the training examples as the model sees them, loss marked) and
prepare (the data preprocessed into the cache, alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from launcher.cli.app import RecipeArg, SetOpt, app, recipe_with_cli

PANEL = "Data"
LOSS_STYLE = "bold black on green"


PREVIEW_HELP = (
    "Show the first training examples as the model sees them, the loss-bearing tokens marked.\n\n"
    "Loads the recipe's tokenizer only (no model, no processes) and tokenizes the first training "
    "rows as training does: a causal LM's through its chat template (tool schemas, tool calls "
    "and tool results included), train_on and truncation; classification rows as tokens and "
    "label; NER rows as subword tokens, the first subword of each word marked with its tag. "
    "Each example says its token count and how many tokens carry loss. Loss-bearing text is "
    "highlighted in a terminal and put in \\[\\[...]] otherwise (a pipe, a file).\n\n"
    "Examples:\n\n"
    "  sft-launch preview recipes/alpaca-tiny-llama.toml\n\n"
    "  sft-launch preview recipe.toml --rows 1 --set task.chat_template=chatml | less\n\n"
    "  sft-launch preview recipe.toml --set data.format=sharegpt "
    "--set 'data.columns={messages=\"conversations\", tools=\"tools\"}'\n\n"
    "shows what the model learns to write in \\[\\[...]], e.g. a tool call (chatml, \\n for a "
    "newline):\n\n"
    "  <|im_start|>assistant\\n\\[\\[<tool_call>\\n{\"name\": \"calculate_area\", "
    "\"arguments\": {\"shape\": \"square\"}}\\n</tool_call><|im_end|>]]\\n<|im_start|>user..."
)


@app.command(rich_help_panel=PANEL, help=PREVIEW_HELP)
def preview(
    recipe_file: RecipeArg,
    rows: Annotated[int, typer.Option(min=1, help="How many training examples to show.")] = 3,
    set_: SetOpt = None,
    picture: Annotated[Path | None, typer.Option(
        help="Images and audio: the PNG to draw the examples into (a contact sheet after "
        "augmentation; log-mel spectrograms). Default: <recipe name>-preview.png here.")] = None,
) -> None:
    """Print training examples with their loss-bearing text marked."""
    from launcher.data.encode.preview import load_processor, preview_picture, preview_rows
    from launcher.data.splits import load_splits
    from launcher.planner.model_path import resolve_model_path

    recipe = recipe_with_cli(recipe_file, set_, None, None)
    splits = load_splits(recipe)
    where = recipe.model.tokenizer or recipe.model.path
    revision = None if recipe.model.tokenizer else recipe.model.revision
    tokenizer = load_processor(recipe, resolve_model_path(where, str(recipe_file), revision))
    names = list(splits.label_map.names) if splits.label_map else None
    examples = preview_rows(splits.train[:rows], tokenizer, recipe, names)
    out = Console(highlight=False, markup=False, emoji=False, soft_wrap=True)
    legend = "loss-bearing text " + ("highlighted" if out.is_terminal else "in [[...]]")
    if all(example.loss_tokens is None for example in examples):
        legend = "the loss is on each example's label"
    out.print(f"{len(examples)} of {splits.stats.train_rows} training examples of "
              f"{recipe_file}; {legend}")
    for index, example in enumerate(examples, 1):
        out.print(Text(f"\n--- example {index}: {example.summary()}", style="bold"))
        if out.is_terminal:
            out.print(Text.assemble(*((s.text, LOSS_STYLE if s.loss else "")
                                      for s in example.segments)))
        else:
            out.print(example.bracketed())
    drawn = picture or Path(f"{recipe.name or Path(recipe_file).stem}-preview.png")
    if preview_picture(splits.train[:rows], tokenizer, recipe, names, drawn):
        out.print(f"\npicture: {drawn}")


PREPARE_HELP = (
    "Preprocess the recipe's data into the cache now, on this machine, without training.\n\n"
    "Tokenizes the text (or checks and indexes the images and recordings) exactly as a launch "
    "would, into the cache every launch of the same data, tokenizer and settings reads: "
    "$SFT_LAUNCH_CACHE, else ~/.cache/sft-launch. A complete entry is left as it is. A Slurm "
    "launch does the same in a CPU job of its own before training (slurm.prep_job), skipped "
    "when the entry is complete.\n\n"
    "Examples:\n\n"
    "  sft-launch prepare recipes/quickstart.toml\n\n"
    "  SFT_LAUNCH_CACHE=/shared/cache sft-launch prepare recipe.toml --set data.max_length=1024"
)


@app.command(rich_help_panel=PANEL, help=PREPARE_HELP)
def prepare(recipe_file: RecipeArg, set_: SetOpt = None) -> None:
    import subprocess
    import sys
    import tempfile

    from launcher.contract.errors import LaunchError
    from launcher.contract.vocabulary import BackendKind
    from launcher.ops.run_setup import write_new_run

    recipe = recipe_with_cli(recipe_file, set_, None, None)
    with tempfile.TemporaryDirectory(prefix="sft-launch-prepare-") as tmp:
        folder, _ = write_new_run(recipe, recipe_file, BackendKind.LOCAL, Path(tmp) / "run",
                                  resume=False, check_tracking=False, quiet=True)
        done = subprocess.run([sys.executable, "-m", "launcher.worker.prepare", "."],
                              cwd=folder.path, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise LaunchError(f"data preparation failed (exit code {done.returncode}): see above")

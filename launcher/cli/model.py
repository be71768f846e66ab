"""Commands about models: eval and predict (a run's final model on a new file), export (merge a
LoRA adapter), make-tiny-model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from launcher.cli.app import RunDirArg, app
from launcher.contract.errors import UsageError
from launcher.contract.evaluation import EvalReport
from launcher.ui.progress import console

PANEL = "Models"

DEMO_CORPUS = Path(__file__).resolve().parents[2] / "recipes/data/alpaca/alpaca_en_demo.json"


@app.command(rich_help_panel=PANEL)
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.", show_default=False)],
    merge: Annotated[
        bool, typer.Option(help="Merge the LoRA adapter in final/ into the base model.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: RUN_DIR/merged).")
    ] = None,
) -> None:
    """Write a LoRA run's model as one plain transformers model (base + adapter, merged)."""
    from launcher.ops.export import merge_lora

    if not merge:
        raise UsageError("export writes merged LoRA models only: add --merge "
                         f"({run_dir}/final already holds the adapter, or the full model)")
    console.print(f"merged model in {merge_lora(run_dir, out or run_dir / 'merged')}")


@app.command("make-tiny-model", rich_help_panel=PANEL)
def make_tiny_model(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the model and tokenizer to.")],
    corpus: Annotated[
        list[Path] | None,
        typer.Option(help="Text file(s) to train the tokenizer on (repeatable)."),
    ] = None,
    hidden: Annotated[int, typer.Option(help="Hidden size.")] = 128,
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 1024,
    seed: Annotated[int, typer.Option(help="Seed of the random init.")] = 0,
) -> None:
    """Write a tiny random-init Llama and a locally trained BPE tokenizer (no hub needed).

    For trying causal-LM recipes offline, e.g.
    sft-launch make-tiny-model .cache/tiny-llama && sft-launch recipes/alpaca-tiny-llama.toml
    """
    from launcher.tasks.tiny_model import build_tiny_causal_lm, build_tokenizer

    files = corpus or [DEMO_CORPUS]
    for file in files:
        if not file.is_file():
            raise UsageError(f"--corpus {file}: file not found" + (
                "" if corpus else " (the default, the repository's alpaca demo, exists in a "
                "checkout only): pass --corpus FILE"))
    tokenizer_dir = out_dir / "tokenizer"
    build_tokenizer(files, tokenizer_dir, vocab_size)
    model = build_tiny_causal_lm(out_dir, tokenizer_dir, hidden, layers, heads, seed)
    shutil.rmtree(tokenizer_dir)
    count = sum(p.numel() for p in model.parameters())
    console.print(f"wrote a {count:,}-parameter Llama and its tokenizer to {out_dir}")


DataOpt = Annotated[Path, typer.Option(
    "--data", metavar="FILE", show_default=False,
    help="The data file: jsonl, json, csv, tsv, parquet or conll.")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", metavar="FORMAT", show_default=False,
    help="Its row format, e.g. classification, conll, alpaca (default: the recipe's "
    "data.format).")]
ColumnsOpt = Annotated[list[str] | None, typer.Option(
    "--columns", metavar="FIELD=COLUMN", show_default=False,
    help="Read a row field from a column of yours, e.g. --columns text=sentence (repeatable; "
    "default: the recipe's data.columns).")]
MaxNewTokensOpt = Annotated[int, typer.Option(
    "--max-new-tokens", min=1, help="Causal LM: tokens generated per row at most (greedy).")]


@app.command("eval", rich_help_panel=PANEL, help=(
    "Score a finished run's final model on a new labelled file, with the task's metrics.\n\n"
    "The file is read as training reads its data (the recipe's format and columns unless "
    "--format / --columns say otherwise), its labels mapped through the run's "
    "label_names.json: a label the run never saw is an error. Metrics: loss, accuracy and "
    "macro-F1 (text, image and audio classification; top-5 accuracy with more than 5 "
    "classes); entity precision, recall and F1, per type too, and accuracy (NER); WER and CER "
    "of the generated transcripts (speech recognition); loss and perplexity on the "
    "loss-bearing tokens (causal LM). A LoRA run is scored with its adapter on the base "
    "model.\n\n"
    "Writes RUN_DIR/eval-NAME.json (the metrics) and RUN_DIR/predictions-NAME.jsonl (index, "
    "prediction, reference per row), NAME being the file's stem.\n\n"
    "Example: sft-launch eval runs/quickstart-20250101-120000 --data sst2-test.tsv"))
def eval_command(run_dir: RunDirArg, data: DataOpt, format_: FormatOpt = None,
                 columns: ColumnsOpt = None, max_new_tokens: MaxNewTokensOpt = 128) -> None:
    from launcher.ops.predict import Source, evaluate_file

    report, path = evaluate_file(run_dir, Source(data, format_, parse_columns(columns)),
                                 max_new_tokens)
    console.print(metrics_table(report))
    for name, rows in report.tables.items():
        console.print(score_table(name, rows))
    console.print(f"metrics: {escape(str(path))}\n"
                  f"predictions: {escape(str(path.with_name(report.predictions)))}")


@app.command(rich_help_panel=PANEL, help=(
    "Predict with a finished run's final model on a file that needs no labels.\n\n"
    "Classification reads the text (and text_pair) of each row; NER the words (--format "
    "tokens rows, or a CoNLL file, its tags ignored); a causal LM the prompt of each row (the "
    "conversation before its answer, if it has one), rendered with the run's chat template "
    "and generation prompt, then answered greedily; image and audio tasks a folder of files "
    "or a csv/jsonl/parquet file with the recipe's image or audio column.\n\n"
    "Writes RUN_DIR/predictions-NAME.jsonl: index and prediction (a label name, a tag per "
    "word, the generated text or transcript) per row, NAME being the file's stem.\n\n"
    "Example: sft-launch predict runs/alpaca-tiny-llama-20250101-120000 --data questions.jsonl "
    "--format prompt_completion --max-new-tokens 64"))
def predict(run_dir: RunDirArg, data: DataOpt, format_: FormatOpt = None,
            columns: ColumnsOpt = None, max_new_tokens: MaxNewTokensOpt = 128) -> None:
    from launcher.ops.predict import Source, predict_file

    path, rows = predict_file(run_dir, Source(data, format_, parse_columns(columns)),
                              max_new_tokens)
    console.print(f"{rows} predictions: {escape(str(path))}")


def parse_columns(pairs: list[str] | None) -> dict[str, str] | None:
    """--columns FIELD=COLUMN ... as a mapping; None when none are given."""
    if not pairs:
        return None
    columns = {}
    for pair in pairs:
        field, _, column = (part.strip() for part in pair.partition("="))
        if not field or not column:
            raise UsageError(f"--columns {pair}: expected FIELD=COLUMN, e.g. text=sentence")
        columns[field] = column
    return columns


def metrics_table(report: EvalReport) -> Table:
    table = Table(title=f"sft-launch eval: {escape(Path(report.data).name)}, {report.rows} rows")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in report.metrics.items():
        table.add_row(name, _number(value))
    return table


def score_table(name: str, rows: dict[str, dict[str, float]]) -> Table:
    """A table of scores by row (NER: precision, recall, F1 and support per entity type)."""
    table = Table(title=name.replace("_", " "))
    table.add_column("")
    columns = list(next(iter(rows.values()), {}))
    for column in columns:
        table.add_column(column, justify="right")
    for kind, scores in rows.items():
        table.add_row(escape(kind), *(_number(scores[column]) for column in columns))
    return table


def _number(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)

"""Commands about models: export (merge a LoRA adapter), make-tiny-model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from launcher.cli.app import app
from launcher.errors import UsageError
from launcher.progress import console

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
    from launcher.export import merge_lora

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
    from launcher.data.tiny_model import build_tiny_causal_lm, build_tokenizer

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



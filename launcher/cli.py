"""The `sft-launch` command line: `sft-launch RECIPE [options]` plus a few subcommands."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from launcher.contract.vocabulary import BackendKind
from launcher.errors import LaunchError, UsageError
from launcher.progress import console
from launcher.recipe.load import load_recipe
from launcher.recipe.schema import Recipe

DEMO_CORPUS = Path(__file__).resolve().parents[1] / "recipes/data/alpaca/alpaca_en_demo.json"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help=(
        "Fine-tune a model from one TOML recipe, on this machine or on a Slurm cluster.\n\n"
        "[bold]sft-launch RECIPE[/bold] validates the recipe, plans the run, writes a run folder "
        "and launches it (same as [bold]sft-launch launch RECIPE[/bold]).\n\n"
        "Examples:\n\n"
        "  sft-launch recipes/quickstart.toml                 # train on this machine\n\n"
        "  sft-launch recipes/quickstart.toml --dry-run       # only write the run folder\n\n"
        "  sft-launch recipe.toml --nodes 4 --set train.lr=2e-5   # Slurm, 4 nodes\n\n"
        "Exit codes: 0 success, 2 bad recipe/arguments/data, 1 training or job failure."
    ),
)

SUBCOMMANDS = {"launch", "plan", "schema", "status", "logs", "cancel", "export", "make-tiny-model"}

RecipeArg = Annotated[Path, typer.Argument(help="The recipe TOML file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key, e.g. --set train.lr=2e-5 (repeatable)."),
]
NodesOpt = Annotated[int | None, typer.Option("--nodes", help="Nodes (overrides the recipe).")]
PpnOpt = Annotated[
    int | None, typer.Option("--procs-per-node", help="Worker processes per node (GPUs per node).")
]


@app.command()
def launch(
    recipe_file: RecipeArg,
    nodes: NodesOpt = None,
    procs_per_node: PpnOpt = None,
    backend: Annotated[str, typer.Option(help="auto (Slurm if present), local or slurm.")] = "auto",
    set_: SetOpt = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run folder (default: runs/<name>-<UTC time>).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Write the run folder, do not launch.")] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --run-dir from its newest checkpoint.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    wait: Annotated[
        bool, typer.Option(help="Slurm: follow the job to its end and exit with its result.")
    ] = False,
) -> None:
    """Validate, plan, write the run folder and launch (the default command)."""
    from launcher.backends import backend_for
    from launcher.jobs import launch as launch_job
    from launcher.run_setup import write_new_run

    recipe = _recipe_with_cli(recipe_file, set_, nodes, procs_per_node)
    chosen = _backend(backend, recipe, dry_run)
    folder, plan = write_new_run(recipe, recipe_file, chosen, run_dir, resume=resume,
                                 check_tracking=not dry_run)
    if dry_run:
        console.print("dry run: nothing launched")
        return
    launch_job(folder, backend_for(plan.backend), resume=resume, wait=wait, quiet=quiet)


RunDirArg = Annotated[Path, typer.Argument(help="The run folder.", show_default=False)]


@app.command()
def status(
    run_dir: Annotated[
        Path | None, typer.Argument(help="The run folder (default: the newest under runs/).")
    ] = None,
) -> None:
    """State, elapsed time, nodes, last step and loss, eval metrics of a run."""
    from launcher.jobs import find_run
    from launcher.jobs import status as run_status

    for label, value in run_status(find_run(run_dir)):
        print(f"{label + ':':<9} {value}")


@app.command()
def logs(
    run_dir: RunDirArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the run "
                                         "ends.")] = False,
    node: Annotated[int | None, typer.Option(help="Only node K's lines (0-based).")] = None,
) -> None:
    """Print a run's output (Slurm: logs/slurm-<job>.out; local: logs/launch.log)."""
    from launcher.jobs import find_run
    from launcher.jobs import logs as run_logs

    run_logs(find_run(run_dir), follow=follow, node=node)


@app.command()
def cancel(run_dir: RunDirArg) -> None:
    """Stop a run (Slurm: scancel; local: SIGTERM to its processes); the run folder stays."""
    from launcher.jobs import cancel as cancel_run
    from launcher.jobs import find_run

    folder = find_run(run_dir)
    console.print(f"job state: {cancel_run(folder).state}; run folder kept: {folder.path}",
                  markup=False)


@app.command("plan")
def plan_command(
    recipe_file: RecipeArg,
    nodes: NodesOpt = None,
    procs_per_node: PpnOpt = None,
    device_memory: Annotated[
        str | None, typer.Option(help="Memory of one device, e.g. 80GiB (default: detected).")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Show the memory plan: bytes per device for every strategy, and what auto picks.

    Reads the model's config.json only (no weights), so it sizes a 70B model on a laptop.
    """
    from launcher.plan.plan import make_plan
    from launcher.plan.report import memory_report

    extra = list(set_ or []) + ([f"distributed.device_memory='{device_memory}'"]
                                if device_memory else [])
    recipe = _recipe_with_cli(recipe_file, extra, nodes, procs_per_node)
    on_cluster = recipe.distributed.nodes > 1 or recipe.slurm.gpus_per_node > 0
    backend = BackendKind.SLURM if on_cluster else BackendKind.LOCAL
    plan = make_plan(recipe, recipe_file=str(recipe_file), backend=backend, gpus_here=0)
    console.print(memory_report(plan, recipe))


@app.command()
def schema() -> None:
    """Print the recipe's JSON schema (for editor completion and validation)."""
    print(json.dumps(Recipe.model_json_schema(), indent=2))


@app.command()
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


@app.command("make-tiny-model")
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


def _recipe_with_cli(path: Path, sets: list[str] | None, nodes: int | None,
                     procs_per_node: int | None) -> Recipe:
    extra = list(sets or [])
    if nodes is not None:
        extra.append(f"distributed.nodes={nodes}")
    if procs_per_node is not None:
        extra.append(f"distributed.procs_per_node={procs_per_node}")
    return load_recipe(path, extra)


def _backend(wanted: str, recipe: Recipe, dry_run: bool) -> BackendKind:
    """The backend `--backend` names; `auto`: Slurm where it is available, else this machine.
    A dry run renders for any backend, available here or not (to read or copy the script)."""
    from launcher.backends import backend_for

    if wanted == "auto":
        usable = backend_for(BackendKind.SLURM).unavailable() is None
        chosen = BackendKind.SLURM if usable else BackendKind.LOCAL
    else:
        try:
            chosen = BackendKind(wanted)
        except ValueError:
            raise UsageError(f"--backend {wanted}: expected auto, "
                             f"{', '.join(BackendKind)}") from None
        why = backend_for(chosen).unavailable()
        if why and not dry_run:
            raise UsageError(f"--backend {wanted}: {why} (add --dry-run to only write the run "
                             "folder and its job script)")
    if chosen is BackendKind.LOCAL and recipe.distributed.nodes > 1:
        raise UsageError(
            f"{recipe.distributed.nodes} nodes need Slurm, and the local backend runs on this "
            "machine only (no `sbatch` found); use --nodes 1, or run where Slurm is available"
        )
    return chosen


def main(argv: list[str] | None = None) -> None:
    """Entry point: `sft-launch RECIPE ...` means `sft-launch launch RECIPE ...`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-") and args[0] not in SUBCOMMANDS:
        args.insert(0, "launch")
    try:
        app(args, prog_name="sft-launch")
    except LaunchError as err:
        console.print(f"[bold red]error:[/bold red] {err}", highlight=False)
        sys.exit(err.exit_code)

if __name__ == "__main__":
    main()

"""The `sft-launch` Typer app and what its commands share: recipe options, the backend choice."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from launcher.contract.errors import UsageError
from launcher.contract.vocabulary import BackendKind
from launcher.recipe.load import load_recipe
from launcher.recipe.schema import Recipe

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

RecipeArg = Annotated[Path, typer.Argument(help="The recipe TOML file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key, e.g. --set train.lr=2e-5 (repeatable)."),
]
NodesOpt = Annotated[int | None, typer.Option("--nodes", help="Nodes (overrides the recipe).")]
BackendOpt = Annotated[str, typer.Option(help="auto (Slurm if present), local or slurm.")]
PpnOpt = Annotated[
    int | None, typer.Option("--procs-per-node", help="Worker processes per node (GPUs per node).")
]


RunDirArg = Annotated[Path, typer.Argument(help="The run folder.", show_default=False)]
NewRunDirOpt = Annotated[
    Path | None, typer.Option("--run-dir", help="Run folder (default: runs/<name>-<UTC time>).")
]


def recipe_with_cli(path: Path, sets: list[str] | None, nodes: int | None,
                     procs_per_node: int | None) -> Recipe:
    extra = list(sets or [])
    if nodes is not None:
        extra.append(f"distributed.nodes={nodes}")
    if procs_per_node is not None:
        extra.append(f"distributed.procs_per_node={procs_per_node}")
    return load_recipe(path, extra)


def choose_backend(wanted: str, recipe: Recipe, dry_run: bool) -> BackendKind:
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




def command_names() -> set[str]:
    """The subcommands, as typed on the command line."""
    return {command.name or command.callback.__name__.replace("_", "-")
            for command in app.registered_commands if command.callback}

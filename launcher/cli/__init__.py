"""The `sft-launch` command line: `sft-launch RECIPE [options]` plus subcommands."""

from __future__ import annotations

import sys
import warnings
from typing import Any

from launcher.cli import data, model, plan, run, sweep  # each registers its commands
from launcher.cli.app import app, command_names
from launcher.contract.errors import LaunchError, LaunchWarning
from launcher.ui.progress import console

# --help shows the commands in these panels, in this order.
PANELS = [run.PANEL, plan.PANEL, sweep.PANEL, data.PANEL, model.PANEL]
app.registered_commands.sort(key=lambda command: PANELS.index(command.rich_help_panel))


def main(argv: list[str] | None = None) -> None:
    """Entry point: `sft-launch RECIPE ...` means `sft-launch launch RECIPE ...`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-") and args[0] not in command_names():
        args.insert(0, "launch")
    warnings.showwarning = _show_warning
    try:
        app(args, prog_name="sft-launch")
    except LaunchError as err:
        console.print(f"[bold red]error:[/bold red] {err}", highlight=False)
        sys.exit(err.exit_code)


_python_show_warning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *args: Any,
                  **kwargs: Any) -> None:
    """sft-launch's own warnings (a renamed recipe key, a plan without a memory estimate) as
    one `warning:` line each; any other warning as Python shows it."""
    if issubclass(category, LaunchWarning):
        console.print(f"[bold yellow]warning:[/bold yellow] {message}", highlight=False)
    else:
        _python_show_warning(message, category, *args, **kwargs)

"""Errors a user can act on: the CLI prints them as one message and exits with their code."""

from __future__ import annotations


class LaunchWarning(UserWarning):
    """Something the user should know that does not stop the launch: the CLI prints it as one
    `warning:` line."""


class LaunchError(Exception):
    """An error with a message meant for the user, never shown with a traceback."""

    exit_code = 1


class UsageError(LaunchError):
    """Bad recipe, bad arguments or bad data found before anything is launched (exit 2)."""

    exit_code = 2


class RecipeError(UsageError):
    """A recipe problem, naming the file and the dotted key."""

    def __init__(self, file: str, key: str, problem: str, fix: str = "") -> None:
        self.file, self.key, self.problem, self.fix = file, key, problem, fix
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}" + (f"\n  fix: {fix}" if fix else ""))

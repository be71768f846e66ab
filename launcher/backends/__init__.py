"""Backends, by kind: where a run folder executes (`backend_for`, the only way the rest of the
project reaches one; it then speaks the `Backend` protocol of `base`)."""

from __future__ import annotations

from collections.abc import Callable

from launcher.backends.base import Backend
from launcher.backends.local import LocalBackend
from launcher.backends.slurm import SlurmBackend
from launcher.contract.vocabulary import BackendKind

BACKENDS: dict[BackendKind, Callable[[], Backend]] = {
    BackendKind.LOCAL: LocalBackend,
    BackendKind.SLURM: SlurmBackend,
}


def backend_for(kind: BackendKind) -> Backend:
    return BACKENDS[kind]()

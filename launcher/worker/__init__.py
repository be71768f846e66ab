"""The training worker, started on every rank from a run folder (`python -m launcher.worker`)."""

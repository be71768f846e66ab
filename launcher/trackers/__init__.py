"""Experiment trackers fed from rank 0 (`tracking.to`): Weights & Biases, MLflow, TensorBoard.

Each receives the same metrics at the same step numbers; none can stop training: a service that
cannot be reached is logged to locally, with the command that uploads it later.
"""

"""The planner (no torch): a recipe to its `Plan` (`make.py`), from the batch arithmetic, the
model's folder, the GPUs here and the memory plan; the checks before launch and the resume rules."""

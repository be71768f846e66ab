"""Data: files and formats to canonical rows (torch-free, for the control plane); chat templates,
masking and packing (for the workers)."""

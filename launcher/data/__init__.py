"""Data files and formats to canonical rows, torch-free for the control plane; `data.encode`
turns the rows into model inputs on the workers."""

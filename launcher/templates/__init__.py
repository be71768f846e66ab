"""Jinja templates of the run folder (package data; those of slurm/ and accelerate_configs/ are
links to the files there, which stay the source)."""

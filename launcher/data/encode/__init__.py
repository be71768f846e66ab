"""Canonical rows to what a model takes, run by the workers (torch, numpy, PIL, transformers):
chat templates and loss masks, packing, image and audio decoding, and what `preview` and the
trackers show of an example."""

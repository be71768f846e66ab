"""Rendering (no torch): the run folder files from the recipe, the plan and the templates."""

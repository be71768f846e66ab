"""The Jinja environment of the run folder's templates (package data: `launcher/templates`)."""

from __future__ import annotations

import shlex
from importlib.resources import files

import jinja2


def _template_source(name: str) -> str:
    """A template shipped in the package (`launcher/templates`, package data in the wheel)."""
    try:
        return files("launcher.templates").joinpath(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise jinja2.TemplateNotFound(name) from None


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_source),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["shquote"] = lambda value: shlex.quote(str(value))
    return env

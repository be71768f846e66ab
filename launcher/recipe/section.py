"""What every recipe section shares: unknown keys refused, assignments validated, no NUL byte,
and paths the OS can open."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

PATH_MAX = 4096  # Linux: longer paths cannot be opened at all
NAME_MAX = 255  # Linux: longest file name


def sane_path(value: str) -> str:
    """A path the OS can open: no NUL byte, not longer than PATH_MAX, no name over NAME_MAX."""
    if "\x00" in value:
        raise ValueError("a path cannot contain a NUL byte")
    if len(value.encode()) > PATH_MAX or any(len(part.encode()) > NAME_MAX
                                            for part in value.split("/")):
        raise ValueError(f"path too long for the OS ({PATH_MAX} bytes, {NAME_MAX} per name)")
    return value


class Section(BaseModel):
    """Every recipe section refuses unknown keys and validates assignments (for --set)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        """No text in a recipe may hold a NUL byte: no file, shell line or W&B name takes one."""
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("text cannot contain a NUL byte")
        return value

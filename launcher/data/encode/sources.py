"""Where a decoded file comes from (a path, or its bytes), checked before a decoder reads it;
the errors name the example's origin and say what to do (shared by images and audio)."""

from __future__ import annotations

import io
import os
import stat
from typing import Any


def open_source(source: Any, origin: str, error: type[ValueError], what: str,
                hint: str) -> str | io.BytesIO:
    """A path that exists, is a file and is not empty, or the bytes as a stream; else `error`
    whose message starts with `origin` (`what`: "image", "audio"; `hint`: what to do)."""
    if isinstance(source, bytes | bytearray | memoryview):
        if not len(source):
            raise error(f"{origin}: empty {what} data (0 bytes); {hint}")
        return io.BytesIO(bytes(source))
    try:
        path = os.fspath(source)
        info = os.stat(path)
    except TypeError:
        raise error(f"{origin}: {type(source).__name__} is not a path or {what} bytes; give a "
                    f"file path or the encoded bytes of the {what} file") from None
    except (FileNotFoundError, NotADirectoryError):
        raise error(f"{origin}: file not found; check the path and that the file was copied "
                    "with the data") from None
    except OSError as exc:
        raise error(f"{origin}: cannot read the file ({exc}); check its permissions") from exc
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{origin}: is a folder, not an {what} file; name an {what} file")
    if info.st_size == 0:
        raise error(f"{origin}: empty file (0 bytes); re-download or re-export it, or drop "
                    "the example")
    return str(path)


def head(stream: str | io.BytesIO) -> bytes:
    """The first bytes of the file, to show in a not-this-kind-of-file message."""
    if isinstance(stream, io.BytesIO):
        return stream.getvalue()[:16]
    try:
        with open(stream, "rb") as file:
            return file.read(16)
    except OSError:
        return b""

"""File names that are not valid UTF-8: kept exactly, shown readably, decoded safely.

POSIX file names are bytes. Python hands a name that does not decode as UTF-8 (say Latin-1
``caf\\xe9.mp4``) to us as a ``str`` with lone surrogates, which msgpack, JSON APIs and
OpenCV cannot take: msgpack raises, and ``cv2.VideoCapture`` crashes the process with a
segmentation fault. So such a name is stored twice, as exact bytes (lossless) and as a
readable UTF-8 form with ``\\xNN`` escapes; decoders are given a UTF-8 alias of the file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def is_utf8(path: str | Path) -> bool:
    """Whether ``path`` is valid UTF-8 text (no surrogates from undecodable bytes)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display(path: str | Path) -> str:
    """A valid-UTF-8 rendering of ``path``: undecodable bytes become ``\\xNN``."""
    text = str(path)
    return text if is_utf8(text) else os.fsencode(text).decode("utf-8", "backslashreplace")


def exact_bytes(path: str | Path) -> bytes:
    """The name's bytes when it is not valid UTF-8 (to store beside :func:`display`), else ``b""``."""
    return b"" if is_utf8(path) else os.fsencode(str(path))


def from_stored(shown: str, raw: bytes) -> str:
    """The path as the OS knows it, from what :func:`display` and :func:`exact_bytes` stored."""
    return os.fsdecode(raw) if raw else shown


@contextmanager
def decodable(path: str | Path) -> Iterator[str]:
    """``path`` itself, or a UTF-8 symlink to it (in a private temp dir) while the block runs.

    Native decoders take ``str`` paths and crash or fail on surrogates; the alias keeps the
    extension, so container detection by name still works.
    """
    if is_utf8(path):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="trackemb-alias-") as tmp:
        alias = Path(tmp) / ("video" + display(Path(path).suffix))
        os.symlink(os.fsencode(os.path.abspath(path)), alias)
        yield str(alias)

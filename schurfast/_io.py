"""Atomic file writes: a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Calls ``write`` on a temporary file beside ``path``, then renames it onto ``path``.

    The directory must exist. On any failure the temporary file is removed and the error
    propagates; an existing ``path`` is left as it was.
    """
    path = Path(path)
    # a unique name rather than mkstemp, whose 0600 mode would stay on the final file
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

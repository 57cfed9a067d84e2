"""Files written whole or not at all: a reader (a second process, a later run reading a cache)
never sees half a file, even when the writer is killed mid-write."""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Optional


def atomic_write(path: str, write: Callable[[str], None], suffix: Optional[str] = None) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it to ``path``.
    ``suffix``: how the temporary name must end, for writers that go by the extension
    (``export_library`` links a ``.so``)."""
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1] + ".tmp" if suffix is None else ".tmp" + suffix
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

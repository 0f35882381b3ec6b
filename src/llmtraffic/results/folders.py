"""Writing a results folder atomically: into a hidden ``.<name>.partial-<pid>`` folder beside
the target, renamed into place only when complete, so that an interrupted or crashed write
never leaves a folder that looks finished (and a replaced folder is never half old, half new).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield an empty hidden folder to write into; on success it replaces ``final`` (an old
    ``final`` is moved aside first and removed after), on any exception it is removed.
    ``final.parent`` must exist."""
    partial = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)  # left by a crashed process with our pid
    partial.mkdir()
    try:
        yield partial
        if final.exists():
            trash = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, trash)
            os.replace(partial, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise

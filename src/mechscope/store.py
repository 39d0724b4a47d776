"""Folders in mechscope's cache that are built once: atomically, under a file lock.

An interrupted first build (Ctrl-C, a killed CI job, a full disk) must never leave a folder that a later run
mistakes for a finished one. :func:`build_once` builds into a hidden staging sibling and renames it into
place only when complete; a file lock makes concurrent processes build it at most once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from .errors import ModelLoadError


def build_once(target: Path, build: Callable[[Path], None], is_complete: Callable[[Path], bool]) -> Path:
    """Return ``target``, first running ``build(staging_folder)`` and renaming the result to ``target`` if
    ``is_complete(target)`` is false. Leftover staging folders of killed builds are removed."""
    if is_complete(target):
        return target
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise PermissionError(f"{root} is not writable")
        lock = FileLock(root / f"{target.name}.lock")
        lock.acquire()
    except OSError as error:
        raise ModelLoadError(
            f"mechscope cannot write its cache folder {root} ({error}); set MECHSCOPE_CACHE to a writable folder."
        ) from error
    try:
        if is_complete(target):
            return target
        for leftover in root.glob(f".{target.name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
        try:
            build(staging)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        lock.release()
    return target

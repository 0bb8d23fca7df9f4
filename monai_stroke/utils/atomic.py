"""Atomic output: a file or folder appears complete under its final name, or not at all.

Writers create a temporary sibling (same folder, so the final ``os.replace`` is a rename on one file
system) and move it into place only when everything succeeded; on any exception the temporary is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_dir", "write_text_atomic", "write_json_atomic"]


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _suffixes(path: Path) -> str:
    # keep ".nii.gz" whole so that libraries that pick a writer by suffix still do the right thing
    return "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it to ``dest`` when the block succeeds.

    Args:
        dest: the final file path. Its parent folder is created if needed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{_suffixes(dest)}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); the final file should have the permissions a plain open() gives
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``dest``; move it to ``dest`` when the block succeeds.

    Args:
        dest: the final folder. An existing folder is replaced only on success, when ``overwrite``.
        overwrite: whether an existing ``dest`` may be replaced.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a result folder should be as readable as mkdir's
    try:
        yield tmp
        if dest.exists():
            if not overwrite:
                raise FileExistsError(f"{dest} exists")
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``dest`` atomically and return the path."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def write_json_atomic(dest: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``dest`` atomically (numpy scalars become Python numbers)."""
    return write_text_atomic(dest, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

"""Content hashes that identify templates, atlases and checkpoints in contracts and reports."""

from __future__ import annotations

import hashlib
import os

import numpy as np

__all__ = ["file_sha256", "array_sha256"]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def array_sha256(*arrays: np.ndarray) -> str:
    """Hex SHA-256 of arrays' shapes, dtypes and bytes (C order)."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.shape}{a.dtype.str}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()

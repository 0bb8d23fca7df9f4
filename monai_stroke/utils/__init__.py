"""Small helpers shared by every stage: atomic file output, hashing, logging."""

from __future__ import annotations

from monai_stroke.utils.atomic import atomic_dir, atomic_path, write_json_atomic, write_text_atomic
from monai_stroke.utils.hashing import array_sha256, file_sha256

__all__ = ["atomic_dir", "atomic_path", "write_json_atomic", "write_text_atomic", "file_sha256", "array_sha256"]

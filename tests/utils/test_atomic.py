from __future__ import annotations

import os
import stat

import pytest

from monai_stroke.utils import atomic_dir, atomic_path, write_json_atomic


def test_file_appears_only_on_success(tmp_path) -> None:
    dest = tmp_path / "sub" / "out.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        assert tmp.name.endswith(".nii.gz")  # writers that pick a format by suffix still work
        tmp.write_text("partial")
        raise RuntimeError("writer failed")
    assert not dest.exists() and not list(dest.parent.iterdir())
    with atomic_path(dest) as tmp:
        tmp.write_text("done")
    assert dest.read_text() == "done"


def test_folder_replaced_only_on_success(tmp_path) -> None:
    dest = tmp_path / "result"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(ValueError), atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
        raise ValueError
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    with atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]  # no temporaries or old copies left


def test_permissions_follow_umask_like_plain_files(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755

"""Anatomy cost: first use (build template + atlas) vs a later process (read the cache) vs an import.

What a user pays once per machine (building the CT template and the default atlas from nilearn's maps), what
every later process pays (reading them from ``$MONAI_STROKE_CACHE``), and what importing a 20-mask atlas
folder costs. Each step runs in a fresh cache folder of one process; the ratios compare like with like on
whatever machine runs it; nothing here asserts a time.

Run: ``python benchmarks/anatomy_benchmark.py``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "anatomy"))


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as work:
        os.environ["MONAI_STROKE_CACHE"] = cache
        from atlas_files import FOREIGN_MAP, write_masks_2mm_las

        from monai_stroke.anatomy import Atlas, template_identity
        from monai_stroke.anatomy import atlas as atlas_module
        from monai_stroke.anatomy import template as template_module
        from monai_stroke.anatomy.atlas_import import import_atlas, parse_mapping

        _, build_template = _timed(template_identity)
        atlas, build_atlas = _timed(Atlas.default)
        # a later process: the in-process memo is what a new process would not have
        template_module._memo.clear()
        atlas_module._memo.clear()
        _, read_cache = _timed(lambda: (template_identity(), Atlas.default().labels))
        masks = write_masks_2mm_las(atlas, Path(work) / "masks")
        _, import_time = _timed(
            lambda: import_atlas(masks, mapping=parse_mapping([FOREIGN_MAP]), pattern="MNI152_{region}_{side}.nii.gz")
        )
        _, export_time = _timed(lambda: atlas.to_dir(Path(work) / "export"))
    result = {
        "first_use_s": round(build_template + build_atlas, 2),
        "of_which_template_s": round(build_template, 2),
        "of_which_atlas_s": round(build_atlas, 2),
        "cached_read_s": round(read_cache, 2),
        "first_use_over_cached": round((build_template + build_atlas) / read_cache, 1),
        "import_20_masks_2mm_s": round(import_time, 2),
        "export_s": round(export_time, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

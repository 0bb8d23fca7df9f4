"""Checks shared by the ingest tests: where the output affine puts each voxel, and blob centroids."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["voxel_world_lps", "inside_source_fov", "blob_centroids_lps", "match_error_mm", "LPS_FLIP"]

LPS_FLIP = np.array([-1.0, -1.0, 1.0])


def voxel_world_lps(affine_ras: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """LPS world position ``(X, Y, Z, 3)`` of every voxel under a RAS affine."""
    ijk = np.indices(shape, dtype=float).reshape(3, -1)
    ras = affine_ras[:3, :3] @ ijk + affine_ras[:3, 3:]
    return (ras.T * LPS_FLIP).reshape(*shape, 3)


def inside_source_fov(points_lps: np.ndarray, written, margin_px: float = 1.0) -> np.ndarray:
    """Whether each output voxel of slice k lies within the field of view of written slice k (minus a margin)."""
    r, c = np.asarray(written.orientation[:3]), np.asarray(written.orientation[3:])
    rows, cols = written.hu.shape[1:]
    inside = np.zeros(points_lps.shape[:3], dtype=bool)
    for k, origin in enumerate(written.origins):
        rel = points_lps[:, :, k] - origin
        i = rel @ r / written.pixel_spacing[1]
        j = rel @ c / written.pixel_spacing[0]
        inside[:, :, k] = (
            (i >= margin_px) & (i <= cols - 1 - margin_px) & (j >= margin_px) & (j <= rows - 1 - margin_px)
        )
    return inside


def blob_centroids_lps(array: np.ndarray, affine_ras: np.ndarray, background: float, threshold: float = 300.0):
    """Intensity-weighted centroids (LPS mm) of the bright blobs, one per connected component above ``threshold``.

    Each component is grown by 3 voxels so that the blob's tails count, then weighted by HU above ``background``.
    """
    labels, n = ndimage.label(array > threshold)
    weights = np.clip(array - background, 0, None)
    centroids = []
    for label in range(1, n + 1):
        region = ndimage.binary_dilation(labels == label, iterations=3)
        w = np.where(region, weights, 0.0)
        ijk = np.array(ndimage.center_of_mass(w))
        ras = affine_ras[:3, :3] @ ijk + affine_ras[:3, 3]
        centroids.append(ras * LPS_FLIP)
    return np.array(centroids)


def match_error_mm(measured: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Distance from each true centre to the nearest measured centroid."""
    if len(measured) == 0:
        return np.full(len(truth), np.inf)
    return np.array([np.min(np.linalg.norm(measured - t, axis=1)) for t in truth])

"""monai_stroke.transforms (see docs/ARCHITECTURE.md)."""

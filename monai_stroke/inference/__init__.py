"""monai_stroke.inference (see docs/ARCHITECTURE.md)."""

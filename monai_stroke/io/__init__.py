"""monai_stroke.io (see docs/ARCHITECTURE.md)."""

"""monai_stroke.synthetic (see docs/ARCHITECTURE.md)."""

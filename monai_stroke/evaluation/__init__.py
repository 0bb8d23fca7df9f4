"""monai_stroke.evaluation (see docs/ARCHITECTURE.md)."""

"""monai_stroke.transfer (see docs/ARCHITECTURE.md)."""

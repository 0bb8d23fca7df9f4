"""monai_stroke.manifests (see docs/ARCHITECTURE.md)."""

"""Thin shim: metadata lives in setup.cfg.

The one thing setup.cfg cannot say: the top-level ``transforms/`` folder (transform-chain config
fragments shared by the bundles) is installed as the package ``monai_stroke.chains``.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["monai_stroke", "monai_stroke.*"]) + ["monai_stroke.chains"])

"""The package version: one place, imported by the package root and by whatever records it (checkpoints, runs)."""

__version__ = "0.1.0"

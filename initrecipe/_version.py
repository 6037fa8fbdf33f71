"""The package version, at the bottom of the import layers so that any module may read it."""

__version__ = "0.2.0"

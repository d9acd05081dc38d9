"""The package version (its own module so that every floor can read it without importing the package's
upper floors through vqkit/__init__.py)."""
__version__ = "0.1.0"

"""The package version, in a module of its own so that setup.cfg and the model card read it without importing
the package's ``__init__`` (which imports the trainers)."""

__version__ = "0.1.0.dev0"

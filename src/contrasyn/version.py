"""The package's version (pyproject.toml's), in a module of its own so that every module can
read it without importing the package's face (``contrasyn/__init__.py``)."""

__version__ = "0.1.0"

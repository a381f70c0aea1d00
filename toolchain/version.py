"""edgeify's version, in a module of its own: the bundle writer and the CLI read it without importing the package
root (which would make them look like they sit above the build engine)."""

__version__ = "0.1.0"

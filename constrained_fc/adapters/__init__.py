"""Adapters shipped with the package (see smollm2-fc/README.md)."""

"""Renderers: one module per output format, each taking {stack: count}."""

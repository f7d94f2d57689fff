"""Nodes of the ``deployment`` pipeline (built by issue #8)."""

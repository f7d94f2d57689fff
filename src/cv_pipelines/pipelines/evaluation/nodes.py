"""Nodes of the ``evaluation`` pipeline (built by issue #7)."""

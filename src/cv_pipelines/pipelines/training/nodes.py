"""Nodes of the ``training`` pipeline (built by issue #7)."""

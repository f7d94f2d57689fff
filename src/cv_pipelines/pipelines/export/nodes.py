"""Nodes of the ``export`` pipeline (built by issue #6)."""

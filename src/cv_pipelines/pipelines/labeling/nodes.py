"""Nodes of the ``labeling`` pipeline (built by issue #4)."""

"""``matrix``: several training candidates, one namespace each, ranked on a leaderboard."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

"""Training methods: a pretext (or none, for the baselines) plus the shared fine-tuning recipe."""

from ichbench.methods.base import LabelNeeds, Method, get_method

__all__ = ["LabelNeeds", "Method", "get_method"]

"""Volume-level evaluation: metrics per volume (eqs. 1–3) and their summaries."""

from ichbench.evaluate.metrics import volume_metrics, volume_ml
from ichbench.evaluate.summary import per_volume_row, summarize

__all__ = ["volume_metrics", "volume_ml", "per_volume_row", "summarize"]

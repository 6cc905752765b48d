"""MLflow tracking. Only the Ray driver writes here: SQLite does not take concurrent writers."""

from ichbench.tracking.mlflow_store import Tracker, default_tracking_uri

__all__ = ["Tracker", "default_tracking_uri"]

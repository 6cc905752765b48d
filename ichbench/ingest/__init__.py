"""Ingest: a dataset reader's volumes -> checks -> resize -> brain mask -> a slice store.

Its own stage between the dataset readers (`ichbench.datasets`, which know file layouts) and the
store (`ichbench.store`, which knows zarr): it uses both, and neither uses it.
"""

from ichbench.ingest.pipeline import (REPORT_NAME, IngestResult, check_volume, ingest, ingest_role,
                                      source_key, volume_has_ich)

__all__ = ["REPORT_NAME", "IngestResult", "check_volume", "ingest", "ingest_role", "source_key",
           "volume_has_ich"]

"""Exports for tools outside ichbench: the canonical folds as files (`folds.py`), volumes on the
store's grid as NIfTI (`nifti.py`), nnU-Net's raw layout (`nnunet_raw.py`)."""

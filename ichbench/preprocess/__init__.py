"""Pure preprocessing functions shared by ingest and prediction."""

from ichbench.preprocess.hu import dicom_to_hu, first_value
from ichbench.preprocess.resize import resize_mask, resize_slices
from ichbench.preprocess.window import WINDOW, window

__all__ = ["dicom_to_hu", "first_value", "resize_mask", "resize_slices", "WINDOW", "window"]

"""The built-in phantom dataset: seeded synthetic head CT written as real DICOM/NIfTI/CSV files."""

from ichbench.datasets.phantom.generator import PhantomVolume, generate_cohort, generate_volume

__all__ = ["PhantomVolume", "generate_cohort", "generate_volume"]

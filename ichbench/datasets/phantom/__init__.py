"""The built-in phantom dataset: seeded synthetic head CT written as real DICOM/NIfTI/CSV files.

The generator (scipy) is imported when a phantom is generated, not when the plugin registers.
"""


def __getattr__(name: str):
    if name in ("PhantomVolume", "generate_cohort", "generate_volume"):
        from ichbench.datasets.phantom import generator
        return getattr(generator, name)
    raise AttributeError(f"module 'ichbench.datasets.phantom' has no attribute {name!r}")


__all__ = ["PhantomVolume", "generate_cohort", "generate_volume"]

"""Helpers shared by the test suite, the benchmarks and plugin authors' own tests; ichbench itself
never imports them. `dicom.write_slice` writes a real CT DICOM slice from raw pixels;
`reference_augment` is the per-sample CPU reference of the batched augmentation."""

"""Real DICOM CT slices written from raw pixels, for tests and benchmarks: real files with real
tags, parsed by the same readers as a scanner's."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_slice(path: Path, raw: np.ndarray, *, slope: float = 1.0, intercept: float = -1024.0,
                bits_stored: int = 16, pixel_representation: int = 0,
                position=(0.0, 0.0, 0.0), orientation=(1, 0, 0, 0, 1, 0), spacing=(0.5, 0.5),
                thickness: float | None = 5.0, series_uid: str | None = None,
                study_uid: str = "1.2.826.0.1.3680043.8.498.1", sop_uid: str | None = None,
                description: str = "", image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
                kernel: str | None = None, window=(40, 80)) -> Path:
    """Write one uncompressed CT slice whose stored values are `raw` (uint16 when
    pixel_representation is 0, int16 when 1). Real files, real tags."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "CT"
    ds.PatientID = "TEST"
    ds.SeriesDescription = description
    ds.ImageType = list(image_type)
    if kernel is not None:
        ds.ConvolutionKernel = kernel
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in spacing]
    if thickness is not None:
        ds.SliceThickness = thickness
    ds.Rows, ds.Columns = raw.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = pixel_representation
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    # MultiValue window tags, as many scanners and RSNA write them
    ds.WindowCenter, ds.WindowWidth = list(window), [80, 200][:len(window)]
    ds.PixelData = np.ascontiguousarray(raw, dtype="<i2" if pixel_representation else "<u2").tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)

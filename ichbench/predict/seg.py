"""The DICOM SEGs of `ichbench predict` (highdicom), referencing the source series:

- `mask.dcm`: one segment, "Hemorrhage" (every model; a subtypes model's union),
- `labels.dcm`: a subtypes model's label map, one segment per class of the model: segment k is
  class id k (`labels.nii.gz`'s value k), in the model's class order, every class a segment even
  where nothing was predicted (highdicom writes its description and no frames, and reads it back
  as an empty mask), so a reader sees the model's whole class list.

Codes come only from pydicom's bundled dictionaries. They hold no concept for any hemorrhage
subtype (nor intracerebral or extradural hemorrhage), so each subtype segment's property type is
their parent, Hemorrhage (SCT 50960005, CID 7151 Segmentation Property Types; category
Morphologically Abnormal Structure, SCT 49755003, as `mask.dcm`), the subtype is named in the
segment label, and its site is coded in the anatomic region where a bundled structure fits: IPH
Brain, IVH Brain ventricle, SAH Subarachnoid space, SDH and EDH Dura mater (beneath and above it;
no subdural or epidural space is bundled). "Intracranial hemorrhage" (SCT 1386000) is not used:
it is in no context group, and pydicom's dictionary gives the same code to "Occlusion of artery".
A class outside these five gets Hemorrhage and its own name as the label, with no region.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ichbench import __version__
from ichbench.predict.models import Ensemble
from ichbench.predict.scan import Scan

# the class name -> (segment label, attribute of codes.SCT for its anatomic region)
SUBTYPE_SEGMENTS = {
    "iph": ("Intraparenchymal hemorrhage (IPH)", "Brain"),
    "ivh": ("Intraventricular hemorrhage (IVH)", "BrainVentricle"),
    "sah": ("Subarachnoid hemorrhage (SAH)", "SubarachnoidSpace"),
    "sdh": ("Subdural hemorrhage (SDH)", "DuraMater"),
    "edh": ("Epidural hemorrhage (EDH)", "DuraMater"),
}

_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName")


def sources(scan: Scan, notes: list[str]):
    """The series' headers, completed where highdicom needs a value an anonymised file lacks
    (new datasets: the caller's are never changed)."""
    import pydicom
    out = []
    for s in scan.slices:
        ds = pydicom.dcmread(str(s.path), stop_before_pixels=True)
        for kw in _TYPE2:
            if kw not in ds:
                setattr(ds, kw, "")
        if not str(ds.get("SliceThickness", "") or "").strip():
            ds.SliceThickness = f"{scan.spacing[0]:.4g}"
            if not notes or "SliceThickness" not in notes[-1]:
                notes.append(f"SliceThickness missing: {scan.spacing[0]:.4g} mm (the slice distance) "
                             "written into the SEG")
        out.append(ds)
    return out


def _segment(number: int, label: str, region: str | None = None):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=label[:64].replace("\\", "/"),   # LO: 64 characters, no '\'
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Hemorrhage,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="ichbench", version=__version__, family=codes.cid7162.ArtificialIntelligence),
        anatomic_regions=[getattr(codes.SCT, region)] if region else None)


def union_segments() -> list:
    return [_segment(1, "Hemorrhage")]


def class_segments(classes) -> list:
    """Segment k for class id k, in the model's class order."""
    out = []
    for k, name in enumerate(classes, start=1):
        label, region = SUBTYPE_SEGMENTS.get(name, (str(name), None))
        out.append(_segment(k, label, region))
    return out


def write_seg(path: Path, source_images, pixels: np.ndarray, segments: list, ens: Ensemble, *,
              series_number: int, what: str, content_label: str) -> None:
    """`pixels`: (S, Rows, Columns) in the source files' order, bool (one segment) or uint8 class
    ids (segment k where the value is k)."""
    import highdicom as hd
    seg = hd.seg.Segmentation(
        source_images=source_images, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=segments,
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="ichbench", manufacturer_model_name=f"ichbench predict ({ens.method})",
        software_versions=__version__, device_serial_number="0",
        series_description=f"ichbench {ens.method} {what} (research use only)",
        content_label=content_label,
        content_description=f"Predicted intracranial {what} (research use only)",
        omit_empty_frames=bool(pixels.any()))   # an empty prediction keeps every frame, deliberately
    seg.save_as(str(path))

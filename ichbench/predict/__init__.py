"""`ichbench predict`: apply a finished run's fold models to a new scan.

    scan = read_scan(path)                    # a DICOM series folder or a NIfTI volume, in HU
    ensemble = load_ensemble(run_id=...)      # the folds' `model.pt`, from MLflow or a file
    pred = predict_scan(ensemble, scan)       # mean sigmoid over folds, threshold, cavity mask
    write_outputs(out_dir, scan, pred, ...)   # mask.nii.gz, mask.dcm, report.json, overlay.png
                                              # (+ labels.nii.gz, labels.dcm of a subtypes model)

A research tool, not a medical device: see docs/predict.md.
"""

from ichbench.predict.infer import Prediction, predict_scan
from ichbench.predict.models import Ensemble, load_ensemble
from ichbench.predict.outputs import write_outputs
from ichbench.predict.scan import Scan, read_scan

__all__ = ["Ensemble", "Prediction", "Scan", "load_ensemble", "predict_scan", "read_scan", "write_outputs"]

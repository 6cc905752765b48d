"""`ichbench predict`: a finished run's fold models applied to a new scan (research use only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ichbench.cli.common import fail, interrupted, workspace


def _fold_list(text: str) -> list[int] | None:
    if text.strip() == "all":
        return None
    try:
        folds = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        fail(f"--folds expects 'all' or a comma list of fold numbers, got {text!r}")
    if not folds:
        fail("--folds names no fold")
    return folds


def predict(
    run: Optional[str] = typer.Option(None, "--run", help="MLflow run id of an `ichbench run` (its parent run)."),
    entry: Optional[Path] = typer.Option(None, "--entry", help="A leaderboard entry JSON; its run's models are used."),
    checkpoint: list[Path] = typer.Option([], "--checkpoint", help="A fold's model.pt (repeatable)."),
    input_: Path = typer.Option(..., "--input", "-i", help="A DICOM series folder or a .nii/.nii.gz volume."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="Folder for mask.nii.gz, mask.dcm, report.json, overlay.png "
                                     "(a subtypes model: labels.nii.gz, labels.dcm too)."),
    folds: str = typer.Option("all", "--folds", help="'all' or a comma list: the fold models to average."),
    series: Optional[str] = typer.Option(None, "--series",
                                         help="SeriesInstanceUID, when the folder holds several series."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default sqlite:///$ICHBENCH_HOME/mlflow.db)."),
    as_json: bool = typer.Option(False, "--json", help="Print report.json."),
    force: bool = typer.Option(False, "--force", help="Replace everything in a non-empty --output folder."),
) -> None:
    """Segment hemorrhage on a scan with a finished run's fold models (mean probability over folds).

    Writes the mask on the input's own grid (NIfTI, and a DICOM SEG for DICOM input), a report with
    the hemorrhage volume in mL and its components, and an overlay. A research tool, not a medical
    device."""
    if device not in (None, "cpu", "cuda"):
        fail(f"--device must be cpu or cuda, got {device!r}")
    try:
        rep, ens = _predict(run, entry, checkpoint, input_, output, _fold_list(folds), series, device,
                            tracking_uri, force)
    except KeyboardInterrupt:   # the outputs' temporary folder is gone, an earlier set is back
        interrupted(f"interrupted; nothing written, {output} left as it was")
    if as_json:
        print(json.dumps(rep, indent=2))
        return
    h = rep["hemorrhage"]
    print(f"{h['volume_ml']:.2f} mL of hemorrhage in {h['n_components']} component(s) on {len(h['slices'])} "
          f"slice(s); {ens.method}, folds {[f.fold for f in ens.folds]}; outputs in {output}")
    print(f"({rep['disclaimer']})")


def _predict(run, entry, checkpoint, input_, output, folds, series, device, tracking_uri, force):
    import torch

    from ichbench.predict import load_ensemble, predict_scan, read_scan, write_outputs
    from ichbench.predict.outputs import check_output
    from ichbench.tracking.mlflow_store import default_tracking_uri

    home = workspace()
    # before minutes of work, not after; --force must not delete what this command reads
    check_output(output, force, keep=[input_, *checkpoint, *([entry] if entry else []), home])
    uri = tracking_uri or default_tracking_uri(home)
    scan = read_scan(input_, series)          # bad input fails before any model is loaded
    ens = load_ensemble(run_id=run, entry=entry, checkpoints=list(checkpoint) or None, tracking_uri=uri,
                        folds=folds, cache=home / "predict-cache")
    pred = predict_scan(ens, scan, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return write_outputs(output, scan, pred, ens, force=force), ens

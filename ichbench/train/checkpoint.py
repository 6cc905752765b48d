"""Atomic checkpoints.

A checkpoint is written to a temporary file beside its final name and moved into place with
os.replace, so a run killed while saving leaves the previous checkpoint intact, never half a file.
The training state holds everything a resumed run needs to continue bit for bit: model, optimiser,
scheduler, every random generator's state, the epochs done and the loss history.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from ichbench.errors import IchbenchError
from ichbench.files import write_atomic

STATE_NAME = "state.pt"          # resumable training state (rewritten every epoch)
PRETRAINED_NAME = "pretrained.pt"  # the declared U-Net parts of a finished pretraining
MODEL_NAME = "model.pt"          # a finished fold's segmentation U-Net, for `ichbench predict`
PRETEXT_SETUP_NAME = "pretext_setup.json"  # what a pretext derived once from its selection (class weights)
MODEL_KIND = "segmentation_model"


def save_atomic(obj, path: Path) -> Path:
    return write_atomic(path, lambda fh: torch.save(obj, fh))


def load(path: Path) -> dict:
    """Load a checkpoint onto the CPU. Only tensors and plain containers are accepted
    (weights_only), so a checkpoint from elsewhere cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise IchbenchError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is one bad file
        raise IchbenchError(f"{path}: not a readable ichbench checkpoint ({type(exc).__name__}: {exc})") from None


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    out = {name: g.get_state() for name, g in generators.items()}
    out["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> None:
    for name, g in generators.items():
        g.set_state(state[name])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(model, optimizer, scheduler, generators, epoch: int, history: list, identity: str,
                   extra: dict | None = None) -> dict:
    return {"kind": "training_state", "identity": identity, "epoch": epoch, "history": history,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng_state(generators), **(extra or {})}


def restore_training_state(state: dict, model, optimizer, scheduler, generators) -> tuple[int, list]:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"], generators)
    return int(state["epoch"]), list(state["history"])


def load_pretrained(path: Path) -> dict:
    ckpt = load(path)
    if ckpt.get("kind") != "pretrained" or "state" not in ckpt:
        raise IchbenchError(f"{path}: not a pretrained checkpoint (made by `ichbench pretrain`)")
    return ckpt


MODEL_EXPECTED = "expected the `model.pt` a finished `ichbench run` fold writes"


def load_model(path: Path) -> dict:
    """A fold model for `ichbench predict`. Any other file is one line naming it: torch's own
    message is several lines and advises turning the safe loader off, which is never the fix for a
    file that is not ichbench's (and would let a hostile one run code)."""
    path = Path(path)
    if not path.is_file():
        raise IchbenchError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():   # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:    # the machine's no (permissions): not a verdict on the file
        raise IchbenchError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is one bad file
        raise IchbenchError(f"{path}: not an ichbench model ({_refused(exc)}); {MODEL_EXPECTED}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("kind"), str):
        raise IchbenchError(f"{path}: not an ichbench model (a {type(ckpt).__name__} saved by another program); "
                            f"{MODEL_EXPECTED}")
    if ckpt["kind"] != MODEL_KIND or "state" not in ckpt or "config" not in ckpt:
        raise IchbenchError(f"{path}: not a fold model (kind {ckpt['kind'][:40]!r}); {MODEL_EXPECTED}")
    return ckpt


def _refused(exc: Exception) -> str:
    """Why torch's safe loader refused a file, in a few words of our own."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return f"it names {found.group(1)}, which no ichbench model holds; nothing in it was run"
    return "not a checkpoint torch can read as tensors and plain data"


def sha256_file(path: Path) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

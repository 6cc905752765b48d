"""A method that tries to read what its fold is scored against (tests/test_blind_folds.py).

It walks every object it can reach from the `Fold` it is handed, the way a plugin could:
attributes, `__dict__`, slots, container items, closures' cells, bound methods' `__self__`,
defaults, an array's base. It does not go through modules, classes, code objects or a
function's globals: those lead to everything any code can import, which the API cannot
withhold (docs/plugins.md, "What a method can see"). `memory_scan` looks wider still: every
array any object of the process refers to, and the locals of every frame on the stack.
"""

from __future__ import annotations

import gc
import os
import sys
import types

import numpy as np
import torch

import ichbench.api as api

STOP = (type, types.ModuleType, types.CodeType, types.FrameType)
# objects that would hand the method a store, its arrays or a zarr node
HANDLES = {"SliceStore", "SliceArrays", "Array", "AsyncArray", "Group", "AsyncGroup", "StorePath"}


def _refs(o) -> list:
    if isinstance(o, types.FunctionType):   # not __globals__: the module, hence everything
        return [o.__closure__, o.__defaults__, o.__kwdefaults__, o.__dict__]
    refs = list(gc.get_referents(o))
    if isinstance(o, np.ndarray):           # arrays are not gc-tracked: follow base and attributes
        refs += [o.base, getattr(o, "__dict__", None)]
    elif isinstance(o, torch.Tensor):
        refs += [o._base, o.grad, getattr(o, "__dict__", None)]
    return refs


def reachable(root, limit: int = 500_000) -> list:
    """Every object reachable from `root` by reference, `root` included."""
    module_dicts = {id(vars(m)) for m in list(sys.modules.values()) if hasattr(m, "__dict__")}
    seen: dict[int, object] = {}
    todo = [root]
    while todo:
        o = todo.pop()
        if o is None or id(o) in seen or isinstance(o, STOP) or id(o) in module_dicts:
            continue
        seen[id(o)] = o
        if len(seen) > limit:
            raise RuntimeError(f"more than {limit} objects reachable from the fold")
        todo.extend(_refs(o))
    return list(seen.values())


def inspect(objs, secrets: list[str]) -> tuple[list[str], list]:
    """(what leaks: store objects and strings naming a secret path, the arrays found)."""
    leaks, arrays = [], []
    for o in objs:
        if type(o).__name__ in HANDLES:
            leaks.append(f"a {type(o).__module__}.{type(o).__name__}")
        if isinstance(o, (str, os.PathLike)):
            text = os.fspath(o) if isinstance(o, os.PathLike) else o
            leaks += [f"the path {text!r}" for s in secrets if isinstance(text, str) and s in text]
        if isinstance(o, (np.ndarray, torch.Tensor)):
            arrays.append(o)
    return leaks, arrays


def memory_scan() -> list:
    """Every array referred to by any gc-tracked object of the process or by a frame's locals."""
    found = {}
    frame = sys._getframe()
    while frame is not None:
        for value in list(frame.f_locals.values()):
            for o in [value, *_refs(value)] if not isinstance(value, STOP) else []:
                if isinstance(o, (np.ndarray, torch.Tensor)):
                    found[id(o)] = o
        frame = frame.f_back
    for holder in gc.get_objects():
        if isinstance(holder, STOP):
            continue
        for o in gc.get_referents(holder):
            if isinstance(o, (np.ndarray, torch.Tensor)):
                found[id(o)] = o
    return list(found.values())


class Cheater(api.Method):
    """Predicts nothing; records what it could reach."""
    name = "cheater"
    label_needs = api.LabelNeeds(segmentation=True)

    def __init__(self, secrets: list[str], scan_memory: bool = False):
        self.secrets, self.scan_memory = secrets, scan_memory
        self.leaks: list[str] = []
        self.arrays: list = []
        self.memory: list = []
        self.n_reached = 0
        self.fold = None

    def finetune_overrides(self, profile):
        return {"epochs": 1}

    def finetune_fold(self, fold):
        self.fold = fold
        fold.report_epoch(1, [{"epoch": 1, "loss": 1.0, "lr": 0.1}])
        objs = reachable(fold)
        self.n_reached = len(objs)
        self.leaks, self.arrays = inspect(objs, self.secrets)
        if self.scan_memory:
            self.memory = [np.array(a.detach().cpu() if isinstance(a, torch.Tensor) else a)
                           for a in memory_scan() if a.ndim == 3]
        return api.FoldOutput(predictions={v.id: np.zeros(v.hu.shape, bool)
                                           for v in fold.volumes(fold.test_ids)})

"""The built-in methods, registered through the same `register_methods` hook plugins use."""

from __future__ import annotations

from ichbench.methods import (baselines, binary_classification, context_restoration, global_contrastive,
                              local_contrastive, multilabel)
from ichbench.plugins import hookimpl

# The paper's order (Table 3 groups): baselines, self-supervised, weakly-supervised pretexts.
MODULES = (baselines, context_restoration, global_contrastive, local_contrastive, binary_classification, multilabel)


@hookimpl
def register_methods(register):
    for module in MODULES:
        for method in module.METHODS:
            register(method)

"""The entry point ichbench loads (`[project.entry-points.ichbench] nnunet = ...`)."""

from ichbench.api import hookimpl, require_api

require_api(2)  # needs a method's own fine-tuning (Method.finetune_fold), added in plugin API 2

from ichbench_nnunet.method import METHODS  # noqa: E402


@hookimpl
def register_methods(register):
    for method in METHODS:
        register(method)

"""Live progress from the Ray workers: a small actor that workers report epochs to, and the
driver's view of it — one bar per task (pretraining, ICM windows, each fold) with its epoch and
last loss, instead of a fold counter that sits at 0/5 until a fold finishes.

Reports are fire-and-forget (`report.remote`): a worker never waits on the board, and a lost
board costs the display, not the run.
"""

from __future__ import annotations

import ray

from ichbench.console import progress_bar


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self) -> None:
        self.state: dict[str, tuple[int, int, str]] = {}

    def report(self, key: str, done: int, total: int, info: str = "") -> None:
        self.state[key] = (int(done), int(total), str(info))

    def snapshot(self) -> dict:
        return dict(self.state)


def epoch_reporter(board, key: str, total: int):
    """An engine `on_epoch(epoch, history)` callback that reports `key`'s epoch and loss."""
    if board is None:
        return None

    def on_epoch(epoch: int, history: list) -> None:
        loss = history[-1].get("loss") if history else None
        board.report.remote(key, epoch, total, f"loss {loss:.4f}" if loss is not None else "")
    return on_epoch


class LiveBars:
    """The driver's bars, refreshed from the board while it waits for Ray results."""

    def __init__(self, board, title: str):
        self.board = board
        self.progress = progress_bar(transient=True)
        self.title = title
        self.tasks: dict[str, int] = {}
        self.totals: dict[str, int | None] = {}
        self.finished: set[str] = set()

    def __enter__(self) -> "LiveBars":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def show(self, key: str, done: int = 0, total: int | None = None, info: str = "") -> None:
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(f"{self.title} {key}", total=total, info=info)
        self.totals[key] = total
        self.progress.update(self.tasks[key], completed=done, total=total, info=info)

    def refresh(self) -> None:
        try:
            state = ray.get(self.board.snapshot.remote(), timeout=2)
        except Exception:  # noqa: BLE001 - the display must never stop a run
            return
        for key, (done, total, info) in sorted(state.items()):
            if key not in self.finished:
                self.show(key, done, total, info)

    def finish(self, key: str, info: str = "done") -> None:
        total = self.totals.get(key) or 1
        self.show(key, total, total, info)
        self.finished.add(key)

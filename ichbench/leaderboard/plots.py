"""The page's figures as inline PNGs (base64), drawn with matplotlib's Agg canvas.

The object-oriented API (Figure + FigureCanvasAgg) keeps pyplot's global state out of library
code; PNG metadata carries no software version so a re-render gives the same bytes.
"""

from __future__ import annotations

import base64
import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ichbench.evaluate.agreement_plot import agreement_png
from ichbench.leaderboard.model import DatasetView, subtype_groups

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf"]


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def dice_boxplots(view: DatasetView) -> str | None:
    """Per-volume Dice per entry: all/ICH volumes and each subtype (the paper's Figure 3)."""
    entries = view.entries
    if not entries:
        return None
    panels = subtype_groups(view)
    ncols = min(3, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    fig = Figure(figsize=(4.2 * ncols, 0.35 * len(entries) + 1.6 + (nrows - 1) * (0.35 * len(entries) + 1.4)),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, ids) in zip(axes.flat, panels):
        data, labels, colors = [], [], []
        for i, r in enumerate(reversed(entries)):
            vals = r.values["dice"]
            chosen = [x for v, x in vals.items() if ids is None or v in ids]
            data.append(chosen)
            labels.append(r.label)
            colors.append(COLORS[(len(entries) - 1 - i) % len(COLORS)])
        n = max((len(d) for d in data), default=0)
        bp = ax.boxplot(data, orientation="horizontal", patch_artist=True, widths=0.6,
                        medianprops={"color": "black"}, flierprops={"markersize": 3})
        for patch, c in zip(bp["boxes"], colors):
            patch.set_facecolor(c)
            patch.set_alpha(0.55)
        ax.set_yticks(range(1, len(labels) + 1), labels if ax in axes[:, 0] else [""] * len(labels), fontsize=8)
        ax.set_title(f"{title} (n = {n})", fontsize=9)
        ax.set_xlim(-2, 102)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("volume Dice [%]", fontsize=8)
    return _png(fig)


def label_efficiency(view: DatasetView) -> str | None:
    """Mean Dice (with its 95% bootstrap CI) against the number of labeled volumes, per method."""
    points = view.label_efficiency
    if not points:
        return None
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    methods = sorted({p["method"] for p in points})
    for i, m in enumerate(methods):
        pts = sorted((p for p in points if p["method"] == m), key=lambda p: p["n_volumes"])
        xs = [p["n_volumes"] for p in pts]
        ys = [p["dice"] for p in pts]
        lo = [p["dice"] - p["ci"][0] if p["ci"] else 0 for p in pts]
        hi = [p["ci"][1] - p["dice"] if p["ci"] else 0 for p in pts]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=COLORS[i % len(COLORS)], label=m)
    group = "ICH volumes" if points[0]["group"] == "ich" else "all volumes"
    ax.set_xlabel("labeled training volumes per fold")
    ax.set_ylabel(f"mean Dice over {group} [%]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def volume_agreement(view: DatasetView) -> list[dict]:
    """Per entry, predicted against true mL and the Bland-Altman plot (the figure each run logs to
    MLflow, `evaluate.agreement_plot`): [{"label", "plot"}]. Every entry version holds its mL."""
    out = []
    for r in view.entries:
        png = agreement_png(*r.ml, title=r.label) if r.ml else None
        if png is not None:
            out.append({"label": r.label, "plot": base64.b64encode(png).decode("ascii")})
    return out

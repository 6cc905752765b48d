"""The volume agreement figure: predicted vs true hemorrhage mL (scatter with the identity line) and
Bland-Altman (difference vs mean, with the bias and the 95 % limits), as volumetry papers show them.

Drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot state in library code);
PNG metadata carries no software version, so the same rows give the same bytes.
"""

from __future__ import annotations

import io

import numpy as np

from ichbench.evaluate.agreement import volume_agreement


def agreement_png(pred_ml, true_ml, title: str = "") -> bytes | None:
    """PNG bytes of the two panels for paired volumes in mL; None for fewer than two volumes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p, t = np.asarray(pred_ml, dtype=float), np.asarray(true_ml, dtype=float)
    if len(p) < 2:
        return None
    a = volume_agreement(p, t)
    fig = Figure(figsize=(9, 4))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    top = float(max(p.max(), t.max(), 1e-3)) * 1.05
    left.scatter(t, p, s=14, alpha=0.7)
    left.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="identity")
    left.set(xlim=(0, top), ylim=(0, top), xlabel="true volume [mL]", ylabel="predicted volume [mL]",
             title=f"CCC {_num(a['ccc'])}, ICC(2,1) {_num(a['icc_2_1'])}")
    left.legend(loc="upper left", frameon=False)
    right.scatter((p + t) / 2, p - t, s=14, alpha=0.7)
    for value, style, label in ((a["bias_ml"], "-", "bias"), (a["loa_low_ml"], "--", "95% limits"),
                                (a["loa_high_ml"], "--", None)):
        if value is not None:
            right.axhline(value, color="grey", lw=1, ls=style, label=label)
    right.set(xlabel="mean of predicted and true [mL]", ylabel="predicted - true [mL]",
              title=f"Bland-Altman: bias {_num(a['bias_ml'], 2)} mL")
    right.legend(loc="upper left", frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, metadata={"Software": None})
    return buf.getvalue()


def _num(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"

"""What the rendered leaderboard shows, computed once for the README and the page.

Published rows keep the paper's printed numbers (percent). Entries are re-scored from their
per-volume counts and shown in percent too, with a bootstrap CI over volumes. Beside them, per
entry: HD, HD95 and NSD as the entry holds them (schema version 3; None before), |RVD| and the
volume agreement recomputed from its mL; for an entry of task subtypes its per-class Dice
(class_table.py); and per dataset the "predicts nothing" reference row (floor.py), kept apart from
the ranked rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ichbench import SUBTYPES
from ichbench.evaluate.agreement import volume_agreement
from ichbench.evaluate.summary import metric_stats
from ichbench.leaderboard import floor as floor_row
from ichbench.leaderboard import stats
from ichbench.leaderboard.canonical import Expectation
from ichbench.leaderboard.claims import distribution_of, is_builtin
from ichbench.leaderboard.class_table import row_classes
from ichbench.leaderboard.entries import labeled_amount, scored_rows, short_id, surface_values
from ichbench.leaderboard.surface_checks import rvd_of
from ichbench.leaderboard.published import PublishedRow
from ichbench.leaderboard.reproductions import status
from ichbench.leaderboard import seeds
from ichbench.leaderboard.schema import EXTERNAL_MARK, EXTERNAL_TOOL, GROUPS, METRICS
from ichbench.splits import DEFAULT_K, PAPER_K

DATASET_TITLES = {"hssayeni": "Hssayeni et al. (PhysioNet ct-ich)", "segcq500": "Seg-CQ500"}
DATASET_ORDER = ("hssayeni", "segcq500")
GROUP_TITLES = {"all": "all volumes", "ich": "ICH volumes"}
METRIC_TITLES = {"dice": "Dice", "precision": "Precision", "recall": "Recall"}
# the surface and volume metrics shown per group: stored (HD, HD95, NSD) or from the mL (|RVD|)
SURFACE_SHOWN = ("hd95_mm", "hd_mm", "nsd", "abs_rvd")


@dataclass
class Row:
    key: str
    kind: str  # "published" | "entry" | "reference" (the predicts-nothing floor, never ranked)
    method: str
    label: str
    groups: dict  # group -> {"n", metric -> {"mean", "std", "ci"}} in percent
    bold: list = field(default_factory=list)
    gpu_hours: float | None = None
    profile: str | None = None
    k: int | None = None
    labeled: dict | None = None
    run_id: str | None = None
    path: str | None = None
    date: str | None = None
    code: dict | None = None
    hardware: str | None = None
    plugin: dict | None = None
    values: dict = field(default_factory=dict)  # metric -> {volume_id: percent}
    subtypes: dict = field(default_factory=dict)  # volume_id -> list | None
    has_ich: dict = field(default_factory=dict)  # volume_id -> bool
    true_voxels: dict = field(default_factory=dict)  # volume_id -> tp + fn
    icm_source: str | None = None                 # +ICM entries: unet | classical | shipped
    builtin: bool = True                          # a built-in method run by ichbench itself
    reproduction: dict | None = None              # reproductions.status(): mark, who, when, …
    # group -> key of SURFACE_SHOWN -> metric_stats (mm; fractions), None where unknown
    surface: dict = field(default_factory=dict)
    agreement: dict | None = None                 # evaluate.agreement.volume_agreement of the mL
    ml: tuple | None = None                       # (predicted mL, true mL) per volume, for the plot
    nsd_mm: float | None = None
    external: bool = False                        # an external tool's entry: self-reported training
    seeds: dict | None = None                     # leaderboard.seeds.over_seeds: several seeds' entry
    classes: dict | None = None                   # class_table.row_classes: an entry of task subtypes

    @property
    def published(self) -> bool:
        return self.kind == "published"

    def sample(self, metric: str, group: str) -> dict:
        vals = self.values.get(metric, {})
        if group == "ich":
            return {v: x for v, x in vals.items() if self.has_ich[v]}
        return vals


@dataclass
class PMatrix:
    group: str
    metric: str
    labels: list  # row labels, in row order
    welch: list  # [i][j] p or None
    paired: list  # [i][j] Holm-adjusted paired p or None
    n_shared: list


@dataclass
class DatasetView:
    name: str
    title: str
    rows: list
    groups: list
    left_out: list
    paper_k: int | None   # the paper's k for this dataset, when the paper covers it
    protocol_k: int | None  # the k to show: the paper's, else the one canonical.json (or the entries) records
    entry_ks: list = field(default_factory=list)  # the k of the re-scored entries, sorted
    floor: Row | None = None   # "predicts nothing", from canonical.json's counts; not among `rows`
    # how much the floor's Dice/recall understate (1/(n+1) taken as 0): the largest over the
    # entries' own counts, {"all", "ich"} as fractions; None without entries
    floor_gap: dict | None = None
    matrices: list = field(default_factory=list)
    label_efficiency: list = field(default_factory=list)  # points, when several amounts exist

    @property
    def entries(self) -> list:
        return [r for r in self.rows if not r.published]


def _published_row(p: PublishedRow) -> Row:
    groups = {g: {"n": p.groups[g]["n"], **{m: {**p.groups[g][m], "ci": None} for m in METRICS}} for g in GROUPS}
    return Row(key=f"published:{p.source}:{p.method}", kind="published", method=p.method, label=p.label,
               groups=groups, bold=list(p.bold), surface={g: dict.fromkeys(SURFACE_SHOWN) for g in GROUPS})


def _floor_row(name: str, exp: Expectation | None) -> Row | None:
    f = floor_row.floor(exp.n_volumes, exp.n_ich_volumes) if exp is not None else None
    if f is None:
        return None
    groups = {g: {"n": f["groups"][g]["n"], **{m: {"mean": _pct(f["groups"][g][m]["mean"]),
                                                   "std": _pct(f["groups"][g][m]["std"]), "ci": None}
                                               for m in METRICS}} for g in GROUPS}
    # an empty prediction against any hemorrhage: Lin's CCC is 0 (no covariance); ICC and bias need
    # the true volumes, which canonical.json does not hold
    agreement = {"ccc": 0.0 if exp.n_ich_volumes else None, "icc_2_1": None, "bias_ml": None,
                 "loa_low_ml": None, "loa_high_ml": None}
    return Row(key=f"reference:{name}", kind="reference", method="predicts_nothing", label=floor_row.LABEL,
               groups=groups, surface=f["surface"], agreement=agreement)


def _floor_gap(entries: list, n_volumes: int | None) -> dict | None:
    """The largest understatement of the floor over the entries' own hemorrhage voxel counts."""
    gaps = [floor_row.understatement([n for v, n in r.true_voxels.items() if r.has_ich[v]], n_volumes)
            for r in entries if n_volumes and len(r.has_ich) == n_volumes]
    return {g: max(x[g] for x in gaps) for g in ("all", "ich")} if gaps else None


def _surface(rows: list[dict], has_surface: bool) -> dict:
    """SURFACE_SHOWN stats of these scored rows: HD, HD95 and NSD as stored (None for an entry
    without them), |RVD| from the mL as every version holds them."""
    out = {k: metric_stats([r["surface"][k] for r in rows]) if has_surface else None
           for k in ("hd95_mm", "hd_mm", "nsd")}
    out["abs_rvd"] = metric_stats([abs(rvd_of(r["pred_ml"], r["true_ml"])) for r in rows])
    return out


def _pct(x):
    return None if x is None else 100.0 * x


def _entry_row(shown: str, e: dict, labels: dict, records: list | None = None) -> Row:
    rows = [{**r, "surface": surface_values(r)} for r in scored_rows(e["per_volume"])]
    has_surface = all(r["surface"] is not None for r in rows)
    values = {m: {r["volume_id"]: 100.0 * r[m] for r in rows} for m in METRICS}
    has_ich = {r["volume_id"]: r["has_ich"] for r in rows}
    groups, surface = {}, {}
    for g in GROUPS:
        chosen = [r for r in rows if g == "all" or r["has_ich"]]
        surface[g] = _surface(chosen, has_surface)
        groups[g] = {"n": len(chosen)}
        for m in METRICS:
            s = e["summary"][g][m]
            ci = stats.bootstrap_ci([100.0 * r[m] for r in chosen])
            groups[g][m] = {"mean": _pct(s["mean"]), "std": _pct(s["std"]), "ci": ci}
    over = seeds.over_seeds(e)
    if over:   # several seeds: every number from each volume's mean over them, and their spread
        values = seeds.volume_means(e, values)
        groups = seeds.seed_groups(groups, values, has_ich, over)
    builtin = is_builtin(e)
    # the paper's label only for the paper's method as ichbench ran it; a plugin's method is shown
    # with its distribution beside it, wherever its label appears
    base = labels.get(e["method"], e["method"]) if builtin else e["method"]
    dist = None if builtin else \
        " ".join(str(x) for x in distribution_of(e) if x) or "unnamed distribution"
    # an external tool's entry says so wherever its label appears: ichbench scored its masks, not its training
    ident = f"{EXTERNAL_MARK} · submission" if e.get("kind") == EXTERNAL_TOOL else "run"
    label = f"{base} [{dist}] · {ident} {short_id(e['mlflow_run_id'])}" if dist else \
        f"{base} · {ident} {short_id(e['mlflow_run_id'])}"
    return Row(key=f"entry:{e['mlflow_run_id']}", kind="entry", method=e["method"],
               label=label, groups=groups, builtin=builtin,
               reproduction=status(records, e["split"]["k"]),
               gpu_hours=e["gpu_hours"], profile=e["profile"], k=e["split"]["k"], labeled=labeled_amount(e),
               run_id=e["mlflow_run_id"], path=shown, date=e["date"], code=e["code"], hardware=e["hardware"],
               plugin=e["plugin"], values=values, subtypes={r["volume_id"]: r["subtypes"] for r in rows},
               has_ich=has_ich, icm_source=_icm_source(e), surface=surface,
               agreement=volume_agreement([r["pred_ml"] for r in rows], [r["true_ml"] for r in rows]),
               ml=([r["pred_ml"] for r in rows], [r["true_ml"] for r in rows]), nsd_mm=e.get("nsd_mm"),
               true_voxels={r["volume_id"]: r["tp"] + r["fn"] for r in rows},
               external=e.get("kind") == EXTERNAL_TOOL, seeds=over, classes=row_classes(e))


def _icm_source(e: dict) -> str | None:
    icm = (e.get("config") or {}).get("icm")
    return str(icm.get("source")) if isinstance(icm, dict) and icm.get("source") else None


def _sort_key(r: Row):
    m = r.groups["all"]["dice"]["mean"]
    return (-(m if m is not None else -1.0), r.kind != "published", r.label)


def _matrices(rows: list, groups: list) -> list:
    out = []
    for g in groups:
        for m in METRICS:
            n = len(rows)
            welch = [[None] * n for _ in range(n)]
            paired_raw = [[None] * n for _ in range(n)]
            n_shared = [[0] * n for _ in range(n)]
            for i in range(n):
                for j in range(i + 1, n):
                    a, b = rows[i], rows[j]
                    if not a.published and not b.published:
                        sa, sb = a.sample(m, g), b.sample(m, g)
                        p = stats.welch(sa.values(), sb.values())
                        pp, ns = stats.paired_wilcoxon(sa, sb)
                        paired_raw[i][j] = paired_raw[j][i] = pp
                        n_shared[i][j] = n_shared[j][i] = ns
                    else:
                        ga, gb = a.groups[g], b.groups[g]
                        p = stats.welch_from_stats(ga[m]["mean"], ga[m]["std"], ga["n"],
                                                   gb[m]["mean"], gb[m]["std"], gb["n"])
                    welch[i][j] = welch[j][i] = p
            # One Holm family per matrix: every pair with a paired test, counted once.
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if paired_raw[i][j] is not None]
            adjusted = stats.holm([paired_raw[i][j] for i, j in pairs])
            paired = [[None] * n for _ in range(n)]
            for (i, j), p in zip(pairs, adjusted):
                paired[i][j] = paired[j][i] = p
            out.append(PMatrix(g, m, [r.label for r in rows], welch, paired, n_shared))
    return out


def _label_efficiency(entries: list) -> list:
    amounts = {round(r.labeled["n_volumes"], 6) for r in entries}
    if len(amounts) < 2:
        return []
    points = []
    for r in entries:
        g = "ich" if r.groups["ich"]["n"] else "all"
        points.append({"method": r.method, "label": r.label, "n_volumes": r.labeled["n_volumes"],
                       "fraction": r.labeled["fraction"], "declared": r.labeled["declared"], "group": g,
                       "dice": r.groups[g]["dice"]["mean"], "ci": r.groups[g]["dice"]["ci"]})
    return sorted(points, key=lambda p: (p["method"], p["n_volumes"], p["label"]))


def build(published: list, entries: dict, expectations: dict, labels: dict,
          reproductions: dict | None = None) -> list:
    """entries: shown path -> accepted entry; expectations: dataset -> Expectation;
    reproductions: shown entry path -> its valid reproduction records."""
    reproductions = reproductions or {}
    names = {p.dataset for p in published} | {e["dataset"]["name"] for e in entries.values()} | set(expectations)
    ordered = [n for n in DATASET_ORDER if n in names] + sorted(names - set(DATASET_ORDER))
    views = []
    for name in ordered:
        rows = [_published_row(p) for p in published if p.dataset == name]
        rows += [_entry_row(path, e, labels, reproductions.get(path))
                 for path, e in sorted(entries.items()) if e["dataset"]["name"] == name]
        if not rows:
            continue
        rows.sort(key=_sort_key)
        differs = any(r.groups["all"]["n"] != r.groups["ich"]["n"] for r in rows)
        groups = ["all", "ich"] if differs else ["all"]
        exp: Expectation | None = expectations.get(name)
        view = DatasetView(name=name, title=DATASET_TITLES.get(name, name), rows=rows, groups=groups,
                           left_out=exp.left_out() if exp and exp.known else [],
                           paper_k=_paper_k(name, exp), protocol_k=_protocol_k(name, exp, rows),
                           entry_ks=sorted({r.k for r in rows if not r.published and r.k is not None}))
        view.floor = _floor_row(name, exp)
        view.floor_gap = _floor_gap(view.entries, exp.n_volumes if exp else None)
        view.matrices = _matrices(rows, groups)
        view.label_efficiency = _label_efficiency(view.entries)
        views.append(view)
    return views


def _paper_k(name: str, exp: Expectation | None) -> int | None:
    return (exp.paper_k if exp is not None else None) or PAPER_K.get(name)


def _protocol_k(name: str, exp: Expectation | None, rows: list) -> int | None:
    """The paper's k; else the k canonical.json records split hashes for (ichbench's default k
    among several); else the entries' k when they agree; None when nothing says."""
    k = _paper_k(name, exp)
    if k is not None:
        return k
    recorded = sorted(int(x) for x in (exp.split_hashes if exp is not None else {}))
    if len(recorded) == 1:
        return recorded[0]
    if DEFAULT_K in recorded:
        return DEFAULT_K
    ks = {r.k for r in rows if not r.published and r.k is not None}
    return ks.pop() if len(ks) == 1 else None


def subtype_groups(view: DatasetView) -> list[tuple[str, set]]:
    """(title, volume ids) panels for the Dice box plots: ICH volumes, then each known subtype."""
    ids_ich = set()
    by_sub = {s: set() for s in SUBTYPES}
    for r in view.entries:
        for v, subs in r.subtypes.items():
            if r.has_ich[v]:
                ids_ich.add(v)
            for s in subs or ():
                if s in by_sub and r.has_ich[v]:
                    by_sub[s].add(v)
    out = []
    if any(r.groups["all"]["n"] != r.groups["ich"]["n"] for r in view.entries):
        out.append(("all volumes", None))
    out.append(("ICH volumes", ids_ich))
    out += [(s.upper(), ids) for s, ids in by_sub.items() if ids]
    return out

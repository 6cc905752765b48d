"""The self-contained `index.html`: inline CSS, a few lines of JS for sorting, inline PNG figures.

Everything reads with JavaScript off (tables are plain HTML in a sensible default order; figures
are <img> data URIs); JS only adds click-to-sort on table headers. No external URL appears.
"""

from __future__ import annotations

from html import escape

from ichbench.leaderboard import plots
from ichbench.leaderboard.model import GROUP_TITLES, METRIC_TITLES, DatasetView, Row
from ichbench.leaderboard.schema import METRICS
from ichbench.leaderboard.stats import N_BOOT

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f24;background:#fafbfc}
main{max-width:1800px;margin:0 auto;padding:1.5rem 2rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{margin-top:2.5rem;border-bottom:2px solid #d0d7de;padding-bottom:.3rem}
h3{margin-top:1.6rem;font-size:1.1rem}
section>p{max-width:110ch}
.lede{color:#444;max-width:70ch}
.wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;background:#fff;margin:.6rem 0}
table.results{width:100%}
table.results td:first-child{min-width:9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:right;vertical-align:top}
th{background:#f0f3f6;position:sticky;top:0}
td.text,th.text{text-align:left}
td.m{white-space:nowrap}
td.details{font-size:12px;min-width:12rem;color:#3b434b;overflow-wrap:anywhere}
table.sortable th[data-sort]{cursor:pointer;user-select:none}
table.sortable th[data-sort]::after{content:" \\2195";color:#8c959f}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2";color:#1b1f24}
table.sortable th[aria-sort=descending]::after{content:" \\25BC";color:#1b1f24}
tr.published td{background:#f6f8fa;color:#3b434b}
tr.published td.text:first-child{font-style:italic}
.badge{display:inline-block;font-size:11px;padding:0 .4rem;border-radius:.6rem;white-space:nowrap}
.badge.published{background:#eaeef2;color:#424a53;border:1px solid #afb8c1}
.badge.entry{background:#dafbe1;color:#116329;border:1px solid #4ac26b}
.badge.reproduced{background:#ddf4ff;color:#0550ae;border:1px solid #54aeff}
.badge.self-reported{background:#fff8c5;color:#7d4e00;border:1px solid #d4a72c}
.badge.reproduction-failed{background:#ffebe9;color:#a40e26;border:1px solid #ff8182}
.ci{display:block;color:#57606a;font-size:11px}
b.best{font-weight:700}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem .8rem;border-radius:.3rem;max-width:90ch}
.muted{color:#57606a}
figure{margin:1rem 0;max-width:1200px}figure img{max-width:100%;height:auto;background:#fff;border:1px solid #d0d7de}
figcaption{color:#57606a;font-size:13px;max-width:90ch}
table.pm td{text-align:center;min-width:3.2rem}
table.pm td.diag{background:#eaeef2}
td.p0{background:#0a3069;color:#fff}td.p1{background:#218bff;color:#fff}td.p2{background:#80ccff}
td.p3{background:#fff}td.na{color:#8c959f}
.legend span{display:inline-block;padding:0 .5rem;margin-right:.3rem;border:1px solid #d0d7de;font-size:12px}
details{margin:.6rem 0}summary{cursor:pointer;font-weight:600}
code{background:#eff1f3;padding:0 .25rem;border-radius:3px}
"""

JS = """
(function(){
  function val(row, i){ var c = row.cells[i]; return c ? c.getAttribute('data-value') : null; }
  function sortBy(table, i, th){
    var heads = table.tHead.rows[0].cells;
    var dir = th.getAttribute('aria-sort') === 'descending' ? 'ascending'
            : th.getAttribute('aria-sort') === 'ascending' ? 'descending'
            : (th.getAttribute('data-sort') === 'num' ? 'descending' : 'ascending');
    for (var h = 0; h < heads.length; h++) heads[h].removeAttribute('aria-sort');
    th.setAttribute('aria-sort', dir);
    var numeric = th.getAttribute('data-sort') === 'num', sign = dir === 'ascending' ? 1 : -1;
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = val(a, i), y = val(b, i);
      if (numeric){
        var xm = x === null || x === '', ym = y === null || y === '';
        if (xm || ym) return xm === ym ? 0 : (xm ? 1 : -1);  // missing values always last
        return sign * (parseFloat(x) - parseFloat(y));
      }
      return sign * String(x).localeCompare(String(y));
    });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(th, i){
      if (!th.hasAttribute('data-sort')) return;
      th.tabIndex = 0;
      th.addEventListener('click', function(){ sortBy(table, i, th); });
      th.addEventListener('keydown', function(e){
        if (e.key === 'Enter' || e.key === ' '){ e.preventDefault(); sortBy(table, i, th); }
      });
    });
  });
})();
"""


def fmt(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_p(p) -> str:
    if p is None:
        return "·"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_class(p) -> str:
    if p is None:
        return "na"
    return "p0" if p < 0.001 else "p1" if p < 0.01 else "p2" if p < 0.05 else "p3"


def _metric_cell(row: Row, group: str, metric: str) -> str:
    s = row.groups[group][metric]
    mean = fmt(s["mean"])
    if f"{group}.{metric}" in row.bold:
        mean = f'<b class="best">{mean}</b>'
    text = f"{mean} ± {fmt(s['std'])}"
    if s["ci"] is not None:
        text += f'<span class="ci">95% CI {fmt(s["ci"][0])}–{fmt(s["ci"][1])}</span>'
    elif row.published:
        text += '<span class="ci">as printed</span>'
    value = "" if s["mean"] is None else f"{s['mean']:.6f}"
    return f'<td class="m" data-value="{value}">{text}</td>'


def _details(row: Row) -> str:
    if row.published:
        return "Spahr et al. 2023, Table 3"
    bits = [f"profile {escape(row.profile or '?')}", f"k = {row.k}"]
    if row.icm_source:
        bits.append(f"ICM: {escape(row.icm_source)}")
    if row.labeled and row.labeled["declared"]:
        bits.append(f"{row.labeled['n_volumes']:.1f} labeled vol./fold")
    if row.plugin and row.plugin.get("distribution"):
        bits.append(escape(f"{row.plugin['distribution']} {row.plugin.get('version') or ''}".strip()))
    rep = row.reproduction or {}
    if rep.get("who"):
        folds = rep["folds"]
        which = "all folds" if rep.get("k") and folds == list(range(rep["k"])) else \
            f"fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))}"
        same = "; identical predictions" if rep.get("identical") else ""
        bits.append(escape(f"{rep['mark']} by {rep['who']} on {rep['date'][:10]} ({which}; "
                           f"{rep['hardware']}; max |ΔDice| {100 * rep['max_delta']:.2f} points"
                           f"{same})"))
    if row.code and row.code.get("commit"):
        bits.append(f"commit {escape(str(row.code['commit'])[:10])}")
    if row.code and row.code.get("url"):
        bits.append(f"code: {escape(row.code['url'])}")  # printed, not linked: the page holds no external URL
    if row.date:
        bits.append(escape(row.date[:10]))
    return " · ".join(bits)


def results_table(view: DatasetView) -> str:
    head = ['<th class="text" data-sort="text">Method</th>', '<th class="text" data-sort="text">Source</th>']
    for g in view.groups:
        for m in METRICS:
            head.append(f'<th data-sort="num">{METRIC_TITLES[m]} [%]<br><span class="muted">{GROUP_TITLES[g]}</span></th>')
    head.append('<th data-sort="num">GPU-hours</th><th class="text">Details</th>')
    body = []
    for r in view.rows:
        mark = (r.reproduction or {}).get("mark", "self-reported")
        badge = ('<span class="badge published">published</span>' if r.published
                 else f'<span class="badge entry">re-scored</span> '
                      f'<span class="badge {mark.replace(" ", "-")}">{escape(mark)}</span>')
        # (a method that is not built in carries its distribution in its label: model.py)
        cells = [f'<td class="text" data-value="{escape(r.label)}">{escape(r.label)}</td>',
                 f'<td class="text" data-value="{r.kind if r.published else mark}">{badge}</td>']
        cells += [_metric_cell(r, g, m) for g in view.groups for m in METRICS]
        gh = "" if r.gpu_hours is None else f"{r.gpu_hours:.6f}"
        cells.append(f'<td data-value="{gh}">{"–" if r.gpu_hours is None else f"{r.gpu_hours:.2f}"}</td>')
        cells.append(f'<td class="text details">{_details(r)}</td>')
        cls = ' class="published"' if r.published else ' class="entry"'
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<div class="wrap"><table class="sortable results" id="results-{view.name}">'
            f"<thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def p_matrix(view: DatasetView, mat) -> str:
    n = len(mat.labels)
    head = "".join(f'<th title="{escape(lbl)}">{i + 1}</th>' for i, lbl in enumerate(mat.labels))
    body = []
    for i, lbl in enumerate(mat.labels):
        cells = [f'<th class="text">{i + 1}. {escape(lbl)}</th>']
        for j in range(n):
            if i == j:
                cells.append('<td class="diag">—</td>')
                continue
            if i > j:
                p, tip = mat.welch[i][j], "Welch t-test (unpaired, unadjusted)"
            else:
                p = mat.paired[i][j]
                tip = (f"paired Wilcoxon over {mat.n_shared[i][j]} shared volumes, Holm-adjusted"
                       if p is not None else "no paired test: a published row has no per-volume values")
            cells.append(f'<td class="{p_class(p)}" title="{escape(tip)}">{fmt_p(p)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="wrap"><table class="pm" id="p-{view.name}-{mat.group}-{mat.metric}">'
            f'<thead><tr><th class="text">{METRIC_TITLES[mat.metric]}, {GROUP_TITLES[mat.group]}</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


GROUP_HEADINGS = {"all": "All volumes", "ich": "ICH volumes"}
LEGEND = ('<p class="legend"><span style="background:#0a3069;color:#fff">p &lt; 0.001</span>'
          '<span style="background:#218bff;color:#fff">p &lt; 0.01</span>'
          '<span style="background:#80ccff">p &lt; 0.05</span><span>p ≥ 0.05</span>'
          '<span class="muted">· not available</span></p>')


def _pvalues_section(view: DatasetView) -> str:
    if len(view.rows) < 2:
        return ""
    parts = ["<h3>p-values between methods (the paper's Figure 4, and the paired test)</h3>",
             "<p>Below the diagonal: Welch's t-test, as in the paper (published rows from their printed mean, std "
             "and n). Above the diagonal: the paired Wilcoxon signed-rank test over the volumes both methods "
             "scored, Holm-adjusted over the matrix; it needs per-volume values, so it exists only between "
             "re-scored entries. Paired is the right test here: every method is evaluated on the same volumes, "
             "and a volume that is hard for one method is hard for the others, so the unpaired test counts that "
             "shared between-volume spread as noise and loses power.</p>", LEGEND]
    first = True
    for g in view.groups:
        mats = [m for m in view.matrices if m.group == g]
        inner = "".join(p_matrix(view, m) for m in mats)
        if first:
            parts.append(f"<h4>{GROUP_HEADINGS[g]}</h4>{inner}")
            first = False
        else:
            parts.append(f"<details><summary>{GROUP_HEADINGS[g]}</summary>{inner}</details>")
    return "".join(parts)


def _figures(view: DatasetView) -> str:
    out = ["<h3>Per-volume Dice (the paper's Figure 3)</h3>"]
    png = plots.dice_boxplots(view)
    if png is None:
        out.append('<p class="muted">No re-scored entries yet: published rows carry no per-volume values, so there '
                   "is nothing to plot. Submit one with <code>ichbench leaderboard submit</code>.</p>")
    else:
        out.append(f'<figure><img class="plot" id="box-{view.name}" alt="Box plots of per-volume Dice per method on '
                   f'{escape(view.title)}, overall and per ICH subtype" src="data:image/png;base64,{png}">'
                   "<figcaption>Per-volume Dice of each re-scored entry, over all volumes, volumes with ICH and per "
                   "subtype (a volume may hold several subtypes; small panels deserve caution, as the paper "
                   "says). Published rows have no per-volume values and are not plotted.</figcaption></figure>")
    if view.label_efficiency:
        png = plots.label_efficiency(view)
        out.append("<h3>Label efficiency</h3>")
        out.append(f'<figure><img class="plot" id="le-{view.name}" alt="Mean Dice against the number of labeled '
                   f'volumes per method" src="data:image/png;base64,{png}"><figcaption>Mean Dice (95% bootstrap CI) '
                   "against the labeled training volumes per fold, from the entries' <code>n_labeled_volumes</code> or "
                   "<code>labeled_fraction</code> (entries without either used every training volume)."
                   "</figcaption></figure>")
        rows = "".join(
            f'<tr><td class="text">{escape(p["label"])}</td><td>{p["n_volumes"]:.1f}</td>'
            f'<td>{fmt(None if p["fraction"] is None else 100 * p["fraction"], 1)}</td>'
            f'<td data-value="{p["dice"]:.6f}">{fmt(p["dice"])}'
            + (f'<span class="ci">95% CI {fmt(p["ci"][0])}–{fmt(p["ci"][1])}</span>' if p["ci"] else "")
            + "</td></tr>" for p in view.label_efficiency)
        out.append(f'<div class="wrap"><table class="sortable"><thead><tr><th class="text" data-sort="text">Entry</th>'
                   f'<th data-sort="num">labeled vol./fold</th><th data-sort="num">labeled [%]</th>'
                   f'<th data-sort="num">Dice [%]</th></tr></thead><tbody>{rows}</tbody></table></div>')
    return "".join(out)


def _protocol(view: DatasetView) -> str:
    scored = "every volume is scored once, in its test fold."
    if view.paper_k is not None:
        text = f"Paper protocol: {view.paper_k}-fold cross-validation; {scored}"
    elif view.protocol_k is not None:
        text = (f"Protocol: {view.protocol_k}-fold cross-validation (from canonical.json; the paper does not "
                f"cover this dataset); {scored}")
    else:
        text = f"Protocol: k-fold cross-validation; {scored}"
    others = [k for k in view.entry_ks if k != (view.paper_k or view.protocol_k)]
    if others:
        text += f" Entries scored with k = {', '.join(map(str, others))} are shown too."
    return text


def dataset_section(view: DatasetView) -> str:
    n_pub = sum(r.published for r in view.rows)
    parts = [f'<section id="{view.name}"><h2>{escape(view.title)}</h2>',
             f"<p>{n_pub} published rows and {len(view.entries)} re-scored entries. {_protocol(view)}</p>"]
    if view.left_out:
        parts.append(f'<p class="note">canonical.json lacks what only a real ingest of this dataset gives, so '
                     f"entries are not checked for: {escape('; '.join(view.left_out))}.</p>")
    if view.groups == ["all"]:
        parts.append("<p>Every volume contains ICH, so the all-volume and ICH-volume figures coincide "
                     "(the paper prints them twice).</p>")
    parts.append(results_table(view))
    parts.append('<p class="muted">Mean ± std over volumes; re-scored entries also show the 95% percentile '
                 f"bootstrap CI of the mean ({N_BOOT} resamples of volumes). Click a header to sort.</p>")
    parts.append(_figures(view))
    parts.append(_pvalues_section(view))
    parts.append("</section>")
    return "".join(parts)


METHODS_TEXT = f"""
<section id="how"><h2>How the numbers are computed</h2>
<p><b>Published rows</b> are the paper's Table 3 as printed (Spahr et al. 2023, doi 10.3389/fnimg.2023.1157565),
kept byte-for-byte in <code>published/spahr2023.json</code>; they have no per-volume values and are never
re-scored. <b>Re-scored entries</b> carry per-volume TP/FP/FN counts; every number here is recomputed from those
counts: Dice = (2TP+1)/(2TP+FP+FN+1), precision = (TP+1)/(TP+FP+1), recall = (TP+1)/(TP+FN+1), per volume with
counts summed over its slices, then mean ± sample std (ddof 1) over all volumes and over volumes with ICH.</p>
<p><b>Confidence intervals</b>: percentile bootstrap of the mean over volumes, {N_BOOT} resamples, fixed seed.
<b>Welch</b>: two-sided unequal-variance t-test, the paper's choice. <b>Paired</b>: two-sided Wilcoxon signed-rank
test on per-volume differences over shared volumes (zero differences dropped; exact distribution for small
samples), Holm step-down correction over all pairs of one matrix.</p>
<p>Counts are self-reported. An entry names the plugin distribution of its method (a built-in
method's name is only accepted from ichbench itself) and carries its resolved config and, per fold,
the sha256 of its model and of its predicted masks. <code>ichbench leaderboard reproduce</code>
re-runs that config on the same store and split and compares every volume's Dice within a
tolerance measured from run-to-run variation; a passing re-run is recorded beside the entry and
marks it <b>reproduced</b>, with who, when and on what hardware.</p>
<p>Entries are validated before they appear: schema, summary recomputed to 1e-9, split hash and dataset fingerprint
against <code>canonical.json</code>, every canonical volume exactly once, one entry per MLflow run.</p>
</section>
"""


def render_page(views: list[DatasetView]) -> str:
    nav = " · ".join(f'<a href="#{v.name}">{escape(v.title)}</a>' for v in views)
    body = "".join(dataset_section(v) for v in views)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<title>ichbench leaderboard: label-efficient ICH segmentation</title>"
            f"<style>{CSS}</style></head><body><main>"
            "<h1>ichbench leaderboard</h1>"
            "<p class=\"lede\">Label-efficient intracranial hemorrhage segmentation in head CT, on the protocol of "
            "Spahr et al. (2023): volume-level Dice, precision and recall in k-fold cross-validation. "
            "<span class=\"badge published\">published</span> rows are the paper's Table 3 as printed; "
            "<span class=\"badge entry\">re-scored</span> rows are submissions recomputed here from "
            "their per-volume counts: <span class=\"badge reproduced\">reproduced</span> when someone "
            "re-ran the entry's config with <code>ichbench leaderboard reproduce</code> and matched its "
            "per-volume Dice, else <span class=\"badge self-reported\">self-reported</span>. Methods "
            "that are not built into ichbench show the plugin distribution they come from.</p>"
            f"<nav>{nav} · <a href=\"#how\">How the numbers are computed</a></nav>"
            f"{body}{METHODS_TEXT}</main><script>{JS}</script></body></html>\n")

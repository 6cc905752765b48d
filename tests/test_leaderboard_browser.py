"""The rendered page in a real browser: headless Chromium (Debian `chromium`) driven over the
Chrome DevTools Protocol loads index.html from disk, logs no console errors, fetches nothing
from the network, shows the tables and plots, and a click on a header sorts the column."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import time
import urllib.request

import aiohttp   # (an MLflow dependency) drives the DevTools websocket
import pytest

from ichbench.leaderboard.canonical import record_from_store
from ichbench.leaderboard.render import render
from tests.test_leaderboard_support import (SUBTYPES_CONFIG, class_rows, copy_folder, flags_of, hand_ratios,
                                            make_entry, phantom_store, with_external, write_entry)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI (.ci/run) sets this: there a missing browser fails the suite instead of skipping the page's tests
REQUIRED = os.environ.get("ICHBENCH_REQUIRE_BROWSER") == "1"
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian `chromium` is not installed "
                                    "(`apt-get install -y chromium`; .ci/run installs it)")


def test_chromium_is_installed_where_the_page_must_be_tested():
    assert CHROMIUM is not None or not REQUIRED, (
        "ICHBENCH_REQUIRE_BROWSER=1 but no `chromium` on PATH: the leaderboard page's browser tests "
        "cannot run (apt-get install -y chromium)")


class Page:
    """A minimal CDP client: send commands, collect events."""

    def __init__(self, ws):
        self.ws, self.next_id, self.events, self.pending = ws, 0, [], {}

    async def pump(self):
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def send(self, method, **params):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 30)
        assert "error" not in reply, reply
        return reply["result"]

    async def js(self, expr):
        res = await self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")

    async def wait_event(self, name, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(e["method"] == name for e in self.events):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(name)


@pytest.fixture
def browser(tmp_path):
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        yield next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def page_file(tmp_path, home):
    folder = copy_folder(tmp_path)
    res = phantom_store(home, n=8)
    record_from_store(folder, home, "phantom", [2])
    flags = flags_of(res)
    for i, (m, frac) in enumerate([("multilabel_dl", None), ("unet_mixed", None), ("multilabel_dl", 0.5)]):
        entry = make_entry(flags, method=m, run_id=f"{i}" * 32, seed=i, k=2, fingerprint=res.fingerprint,
                           config={"data": {"labeled_fraction": frac}} if frac else None)
        # unet_mixed was also scored on phantom_shifted (--test-on): the train × test matrix
        write_entry(folder, with_external(entry, flags) if m == "unet_mixed" else entry)
    # a subtypes entry (finetune.task=subtypes): the per-class table, from label maps scored by evaluate.classes
    write_entry(folder, make_entry(flags, method="unet_mixed", run_id="3" * 32, k=2, fingerprint=res.fingerprint,
                                   rows=class_rows(flags, 3), config=SUBTYPES_CONFIG))
    render(folder)
    return folder.index


# Layout of every results table, measured in the DOM: cells whose content is wider than the cell,
# cells cut by an ancestor that hides overflow or lying beyond their scroll wrapper's range (unreachable),
# and cells not visible without scrolling (out of view).
LAYOUT = """(() => {
  const vw = document.documentElement.clientWidth, out = {vw, page: document.documentElement.scrollWidth, tables: []};
  const name = c => c.textContent.trim().slice(0, 30);
  for (const t of document.querySelectorAll('table.results')) {
    const wrap = t.closest('.wrap'), wr = wrap.getBoundingClientRect();
    const info = {id: t.id, cols: t.tHead.rows[0].cells.length, width: t.getBoundingClientRect().width,
                  scroll: wrap.scrollWidth, client: wrap.clientWidth, overflowing: [], unreachable: [], out_of_view: [],
                  details: t.querySelectorAll('td.details').length};
    for (const c of t.querySelectorAll('th, td')) {
      const r = c.getBoundingClientRect();
      if (c.scrollWidth > c.clientWidth + 1) info.overflowing.push(name(c));
      for (let a = c.parentElement; a && a !== document.documentElement; a = a.parentElement) {
        const ox = getComputedStyle(a).overflowX, ar = a.getBoundingClientRect();
        const cut = r.right > ar.right + 1 || r.left < ar.left - 1;
        if ((ox === 'hidden' || ox === 'clip') && cut) info.unreachable.push(name(c));
      }
      if (r.right - wr.left + wrap.scrollLeft > wrap.scrollWidth + 1) info.unreachable.push(name(c));
      if (r.right > wr.right + 1 || r.right > vw + 1) info.out_of_view.push(name(c));
    }
    out.tables.push(info);
  }
  return out;
})()"""


async def _layout(page, width):
    await page.send("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
    await page.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return await page.js(LAYOUT)


async def _drive(ws_url, url):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url, max_msg_size=0) as ws:
            page = Page(ws)
            pump = asyncio.create_task(page.pump())
            for domain in ("Page", "Runtime", "Log", "Network"):
                await page.send(f"{domain}.enable")
            await page.send("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1,
                            mobile=False)
            await page.send("Page.navigate", url=url)
            await page.wait_event("Page.loadEventFired")
            out = {"layout_1400": await _layout(page, 1400), "layout_800": await _layout(page, 800)}
            await _layout(page, 1400)
            out["phantom_text"] = await page.js("document.querySelector('#phantom > p').textContent")
            out["tables"] = await page.js("document.querySelectorAll('table.results').length")
            out["published_rows"] = await page.js("document.querySelectorAll('#results-hssayeni tr.published').length")
            out["plots"] = await page.js(
                "Array.from(document.querySelectorAll('img.plot')).map(i => [i.id, i.complete && i.naturalWidth > 0])")
            sel = "#results-hssayeni thead th:nth-child(8)"  # Recall [%], ICH volumes
            out["header"] = await page.js(f"document.querySelector('{sel}').textContent")
            col = ("Array.from(document.querySelectorAll('#results-hssayeni tbody tr'))"
                   ".map(r => parseFloat(r.cells[7].getAttribute('data-value')))")
            out["before"] = await page.js(col)
            # a real mouse click at the header's position, not element.click()
            await page.js(f"document.querySelector('{sel}').scrollIntoView({{block: 'center'}})")
            box = await page.js(f"(() => {{ const r = document.querySelector('{sel}').getBoundingClientRect();"
                                " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
            for kind in ("mousePressed", "mouseReleased"):
                await page.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                                clickCount=1)
            out["after_one"] = await page.js(col)
            out["aria"] = await page.js(f"document.querySelector('{sel}').getAttribute('aria-sort')")
            for kind in ("mousePressed", "mouseReleased"):
                await page.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                                clickCount=1)
            out["after_two"] = await page.js(col)
            # the floor stays in the footer, below every sorted row: never ranked
            out["last_rows"] = await page.js("Array.from(document.querySelectorAll('table.results'))"
                                             ".map(t => t.rows[t.rows.length - 1].id || t.rows[t.rows.length - 1]"
                                             ".className)")
            out["floor_hssayeni"] = await page.js("document.querySelector('#floor-hssayeni td.m').textContent")
            out["surface_head"] = await page.js(
                "Array.from(document.querySelectorAll('#surface-phantom thead th')).map(h => h.textContent)")
            out["surface_cells"] = await page.js(
                "Array.from(document.querySelectorAll('#surface-phantom tr')).slice(1).map(r => "
                "[r.className, Array.from(r.cells).map(c => c.textContent)])")
            out["traintest"] = await page.js(
                "Array.from(document.querySelectorAll('#traintest-unet_mixed tr')).map(r => "
                "Array.from(r.cells).map(c => c.textContent))")
            out["traintest_tables"] = await page.js("document.querySelectorAll('table.traintest').length")
            out["classes_head"] = await page.js(
                "Array.from(document.querySelectorAll('#classes-phantom thead th')).map(h => h.textContent)")
            out["classes_rows"] = await page.js(
                "Array.from(document.querySelectorAll('#classes-phantom tbody tr')).map(r => "
                "Array.from(r.cells).map(c => c.textContent))")
            out["classes_tables"] = await page.js("document.querySelectorAll('table.classes').length")
            await asyncio.sleep(0.2)
            out["events"] = list(page.events)
            pump.cancel()
            return out


@needs_chromium
def test_page_in_headless_chromium(browser, page_file):
    out = asyncio.run(_drive(browser, page_file.as_uri()))
    errors = [e for e in out["events"]
              if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []
    fetched = [e["params"]["request"]["url"] for e in out["events"] if e["method"] == "Network.requestWillBeSent"]
    assert fetched and all(u.startswith(("file://", "data:")) for u in fetched), fetched
    assert out["tables"] == 7 and out["published_rows"] == 10
    assert dict(out["plots"]) == {"box-phantom": True, "le-phantom": True, "va-phantom-1": True,
                                  "va-phantom-2": True, "va-phantom-3": True, "va-phantom-4": True}
    # after sorting, each table still ends with its "predicts nothing" reference row (the per-class one has none)
    assert out["last_rows"] == ["floor-hssayeni", "reference", "floor-segcq500", "reference",
                                "floor-phantom", "reference", "entry"]
    assert out["floor_hssayeni"].startswith("52.00 ± 50.30")    # 39 of 75 volumes without ICH
    # the surface table: HD95, HD, NSD and |RVD| per volume group, then the volume agreement
    head = [h.split("[")[0].split("mL")[0].strip() for h in out["surface_head"]]
    assert head == ["Method", "HD95", "HD", "NSD", "|RVD|", "HD95", "HD", "NSD", "|RVD|", "CCC", "ICC(2,1)", "Bias"]
    cells = dict((r[1][0], (r[0], r[1][1:])) for r in out["surface_cells"])
    entries = [v for k, v in cells.items() if v[0] == "entry"]
    assert len(entries) == 4 and all("–" not in c for _, row in entries for c in row[:4]), entries
    kind, floor = cells["Predicts nothing (reference)"]
    assert kind == "reference" and "∞ × 4" in floor[0]       # HD95 infinite on the 4 ICH volumes
    assert out["header"].startswith("Recall [%]") and "ICH volumes" in out["header"]
    # the page opens sorted by Dice over all volumes, not by this column
    assert out["before"] != sorted(out["before"], reverse=True)
    assert out["after_one"] == sorted(out["before"], reverse=True)
    assert out["aria"] == "descending"
    assert out["after_two"] == sorted(out["before"])
    # the train × test matrix: only unet_mixed has external results; diagonal its cross-validation,
    # the other cell its fold ensemble on phantom_shifted (with the fold models' mean)
    entry = json.loads(next(page_file.parent.glob("entries/phantom/unet_mixed--*.json")).read_text())
    ext = entry["external"][0]
    dice = {k: f"{100 * s['all']['dice']['mean']:.1f}" for k, s in
            (("cv", entry["summary"]), ("ensemble", ext["summary"]), ("folds", ext["fold_mean"]))}
    assert out["traintest_tables"] == 1
    assert out["traintest"] == [["trained on \\ tested on", "phantom", "phantom_shifted"],
                                ["phantom", dice["cv"], f"{dice['ensemble']} (folds {dice['folds']})"]]
    # the per-class table: the subtypes entry alone (binary entries and the paper's rows have no classes),
    # per class its Dice over the n volumes holding it and over all volumes, then the macro means
    sub = json.loads((page_file.parent / "entries" / "phantom" / "unet_mixed--33333333.json").read_text())
    assert out["classes_tables"] == 1
    assert out["classes_head"] == ["Method"] + [f"{n}{g}" for n in [*(c.upper() for c in sub["classes"]), "Macro"]
                                                for g in ("volumes with it", "all volumes")]
    [row] = out["classes_rows"]
    want, means = ["U-Net 2D mixed · run 33333333"], {"with": [], "all": []}
    for n in sub["classes"]:   # Dice by hand (eqs. 1-3, eps 1) from the class counts the entry holds
        dice = [(100 * hand_ratios(r["classes"][n]["tp"], r["classes"][n]["fp"], r["classes"][n]["fn"])["dice"],
                 r["classes"][n]["tp"] + r["classes"][n]["fn"] > 0) for r in sub["per_volume"]]
        for group, vals in (("with", [d for d, holds in dice if holds]), ("all", [d for d, _ in dice])):
            means[group].append(statistics.fmean(vals))
            want.append(f"{statistics.fmean(vals):.2f}" + (f"± {statistics.stdev(vals):.2f}" if len(vals) > 1 else "")
                        + (f"n = {len(vals)}" if group == "with" else ""))
    want += [f"{statistics.fmean(means[g]):.2f}5 classes" for g in ("with", "all")]
    assert row == want


@needs_chromium
def test_results_tables_fit_a_1400_pixel_window(browser, page_file):
    out = asyncio.run(_drive(browser, page_file.as_uri()))
    wide, narrow = out["layout_1400"], out["layout_800"]
    assert wide["vw"] >= 1380 and narrow["vw"] <= 800
    # per dataset its results table (with the Details column) and its surface table
    # (and the phantom's per-class table: it has a subtypes entry)
    assert len(wide["tables"]) == 7 and [t["details"] > 0 for t in wide["tables"]] == [True, False] * 3 + [False]
    for t in wide["tables"]:
        # at 1400 px every cell, the Details included, is whole and in view, and the table uses the width
        assert t["overflowing"] == [] and t["unreachable"] == [] and t["out_of_view"] == [], t
        assert t["cols"] >= 7 and t["width"] >= 0.9 * wide["vw"], t
    assert wide["page"] <= wide["vw"]
    for t in narrow["tables"]:
        # narrower: the wrapper scrolls sideways, nothing is cut, and the page itself does not scroll
        assert t["overflowing"] == [] and t["unreachable"] == [], t
        # (a table narrow enough to fit, as Seg-CQ500's one-group surface table, need not scroll)
        assert t["scroll"] > t["client"] or (t["details"] == 0 and t["width"] <= t["client"]), t
    assert narrow["page"] <= narrow["vw"]
    # the phantom is not a dataset of the paper: its k comes from canonical.json, and the entries' k is named
    text = " ".join(out["phantom_text"].split())
    assert "?-fold" not in text and "Protocol: 5-fold cross-validation (from canonical.json" in text
    assert "Entries scored with k = 2 are shown too." in text

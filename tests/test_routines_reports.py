"""Supervision report figures against a hand-computed case; the HTML renders in Chromium."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alerts.engine import AlertEngine
from carewatch.clock import SimClock
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns
from ingest.state import StateStore
from routines.alertdata import AlertData
from routines.charts import _figures
from routines.html import TIER_LABELS, render_html
from routines.reports import build_report
from routines.service import Routines
from tests.browser_harness import ARTIFACTS, needs_chromium
from tests.routines_helpers import local, make_routines, registry, run_until

T = local(2026, 11, 10, 10)
AS_OF_ALERTS = T + 5000
MONTH_END = local(2026, 12, 1)


def _scenario(tmp_path: Path) -> tuple[Routines, AlertEngine, SimClock]:
    """Five alerts with known severities and acknowledgement times (see the test for the
    hand computation), and a month of routines with three completions."""
    config = registry()
    clock = SimClock(local(2026, 11, 1))
    routines, engine = make_routines(config, clock, tmp_path, alerts=True)
    assert engine is not None
    routines.tick(clock.now())
    run_until(routines, clock, local(2026, 11, 3, 10))
    routines.complete("weekly_call:r-1:2026-W45", by="s1", now=clock.now(), notes="all well")
    run_until(routines, clock, local(2026, 11, 7, 10))
    routines.complete("weekly_call:r-2:2026-W45", by="s1", now=clock.now(), notes="late call",
                      outcome="not_reached")
    run_until(routines, clock, T)
    ack_at = {"r-1/k1": 60, "r-2/k1": 200, "r-3/k2": 1000, "r-4/k1": 400}
    resolve_at = {"r-1/k1": 600, "r-2/k1": 1000, "r-3/k2": 2000}
    for rid, kind, sev in (("r-1", "k1", "high"), ("r-2", "k1", "high"),
                           ("r-3", "k2", "medium"), ("r-4", "k1", "critical"),
                           ("r-1", "k3", "low")):
        engine.raise_manual(rid, kind=kind, severity=sev, by="test", note="case", now=T)
    for dt in range(0, 5001, 10):
        now = T + dt
        clock.set(now)
        engine.tick(now)
        for key, at in ack_at.items():
            if at == dt:
                rid, kind = key.split("/")
                engine.ack(rid, kind, "someone", now)
        for key, at in resolve_at.items():
            if at == dt:
                rid, kind = key.split("/")
                engine.resolve(rid, kind, "someone", now, "done")
    run_until(routines, clock, local(2026, 11, 20, 10))
    routines.complete("monthly_visit:r-3:2026-11", by="s2", now=clock.now(), notes="visited")
    run_until(routines, clock, MONTH_END)
    return routines, engine, clock


@pytest.fixture
def scenario(tmp_path: Path) -> Any:
    routines, engine, clock = _scenario(tmp_path)
    yield routines, engine, clock
    routines.close()
    engine.close()


def test_alert_figures_match_the_hand_computed_case(scenario: Any) -> None:
    routines, engine, _clock = scenario
    data = AlertData(engine.store.path)
    rep = build_report(routines.config, routines.store, data, "day", "2026-11-10", AS_OF_ALERTS)
    al = rep["district"]["alerts"]
    assert al["total"] == 5
    assert al["by_kind"] == {"k1": 3, "k2": 1, "k3": 1}
    assert al["by_severity"] == {"critical": 1, "high": 2, "medium": 1, "low": 1}
    tiers = al["response"]["tiers"]
    # Acknowledged at tier 1: 60 s and 200 s -> median 130, p90 60 + 0.9 * 140 = 186.
    assert tiers["1"]["time_to_ack_s"] == {"n": 2, "median": 130.0, "p90": 186.0}
    # ...resolved after 600 s and 1000 s -> median 800, p90 600 + 0.9 * 400 = 960.
    assert tiers["1"]["time_to_resolve_s"] == {"n": 2, "median": 800.0, "p90": 960.0}
    # The medium alert escalated at 900 s (tier 2) and was acknowledged there at 1000 s.
    assert tiers["2"]["time_to_ack_s"] == {"n": 1, "median": 1000.0, "p90": 1000.0}
    assert tiers["2"]["time_to_resolve_s"]["median"] == 2000.0
    # The critical one (120 s a tier) reached tier 4 at 360 s; acknowledged at 400 s.
    assert tiers["3"]["time_to_ack_s"]["n"] == 0
    assert tiers["4"]["time_to_ack_s"] == {"n": 1, "median": 400.0, "p90": 400.0}
    assert tiers["4"]["time_to_resolve_s"]["n"] == 0
    overall = al["response"]["overall"]
    # 60, 200, 400, 1000 -> median 300, p90 at rank 2.7: 400 + 0.7 * 600 = 820.
    assert overall["time_to_ack_s"] == {"n": 4, "median": 300.0, "p90": 820.0}
    # 600, 1000, 2000 -> median 1000, p90 at rank 1.8: 1000 + 0.8 * 1000 = 1800.
    assert overall["time_to_resolve_s"] == {"n": 3, "median": 1000.0, "p90": 1800.0}
    # Reached: all five at tier 1; medium, critical and low (at 3600 s) tier 2; critical 3, 4.
    assert [tiers[t]["reached"] for t in "1234"] == [5, 3, 1, 1]
    assert al["escalations"] == {"2": 3, "3": 1, "4": 1}
    # Within the tier's time: tier 1 the two highs of five (the low's 3600 s ran out by
    # 5000 s); tier 2 the medium of two judged (the low's tier-2 time has not run out);
    # tier 3 none of one; tier 4 the critical (40 s after reaching it, limit 120 s).
    assert [tiers[t]["acked_within_tier_time"] for t in "1234"] == [0.4, 0.5, 0.0, 1.0]
    assert [tiers[t]["judged"] for t in "1234"] == [5, 2, 1, 1]
    gufu, lishi = rep["towns"]["gufu"]["alerts"], rep["towns"]["lishi"]["alerts"]
    assert (gufu["total"], lishi["total"]) == (4, 1)
    assert lishi["escalations"] == {"2": 1, "3": 1, "4": 1}


def test_routine_figures_match_the_hand_computed_case(scenario: Any) -> None:
    routines, engine, clock = scenario
    rep = build_report(routines.config, routines.store, AlertData(engine.store.path), "month",
                       "2026-11", clock.now())
    assert "<th>未联系上 Not reached</th>" in render_html(rep)
    ro = rep["district"]["routines"]
    outcomes = {k: v.pop("outcomes") for k, v in ro["by_kind"].items()}
    for group in (ro["by_staff"], ro["by_institution"]):
        for v in group.values():
            v.pop("outcomes")
    # what the completed ones found: the late call did not reach its resident
    none = {"ok": 0, "concern": 0, "hazard_found": 0, "not_reached": 0, "other": 0}
    assert outcomes["weekly_call"] == {**none, "ok": 1, "not_reached": 1}
    assert outcomes["monthly_visit"] == {**none, "ok": 1} and outcomes["daily_check"] == none
    # Weekly calls issued in November: gufu W44-W49 (3 residents), lishi W44-W48: 23 (the
    # running week W44 is issued at the first start, Nov 1 00:00, so it counts here).
    # Done on time 1, late 1; still open at Dec 1 00:00: gufu W49 (3) and lishi W48 (1).
    assert ro["by_kind"]["weekly_call"] == {"done": 1, "late": 1, "missed": 17, "open": 4,
                                            "total": 23, "on_time_share": round(1 / 19, 4)}
    # Daily checks: 30 days x 4; each not reviewed is missed at the next day's check.
    assert ro["by_kind"]["daily_check"] == {"done": 0, "late": 0, "missed": 116, "open": 4,
                                            "total": 120, "on_time_share": 0.0}
    assert ro["by_kind"]["monthly_visit"] == {"done": 1, "late": 0, "missed": 0, "open": 3,
                                              "total": 4, "on_time_share": 1.0}
    # s2 answers for r-3: 30 checks, 6 calls, 1 inspection, 1 visit (done).
    assert ro["by_staff"]["s2"] == {"done": 1, "late": 0, "missed": 34, "open": 3, "total": 38,
                                    "on_time_share": round(1 / 35, 4)}
    assert ro["by_institution"]["inst-b"]["total"] == 30 + 5 + 2
    assert rep["district"]["daily_checks"] == 120
    assert rep["district"]["residents_registered"] == 4
    assert len(rep["daily"]) == 30 and rep["daily"][9]["alerts"] == 5


@needs_chromium
def test_html_report_renders_in_headless_chromium(scenario: Any, browser: Any) -> None:
    routines, engine, clock = scenario
    rep = build_report(routines.config, routines.store, AlertData(engine.store.path), "month",
                       "2026-11", clock.now())
    html = render_html(rep)
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    ARTIFACTS.mkdir(exist_ok=True)
    page_file = ARTIFACTS / "routines-report-2026-11.html"
    page_file.write_text(html, encoding="utf-8")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(page_file.as_uri())
    assert "月度监管报告 Monthly supervision report" in page.title()
    assert page.locator("svg").count() >= 2 + 3 * 3
    headers = page.locator("h2").all_inner_texts()
    assert headers[0].startswith("全区 District") and len(headers) == 3
    box = page.locator("svg").first.bounding_box()
    assert box is not None and box["width"] > 100
    shot = ARTIFACTS / "routines-report-2026-11.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_report_command_writes_html_json_pdf_and_pngs(scenario: Any, tmp_path: Path) -> None:
    import orjson
    import yaml

    from carewatch.cli import main

    routines, engine, clock = scenario
    reg = tmp_path / "reg.yaml"
    reg.write_text(yaml.safe_dump(routines.config.model_dump(mode="json",
                                                             exclude_defaults=True)))
    data_dir = Path(engine.store.path).parent
    out = tmp_path / "out"
    code = main(["report", "--month", "2026-11", "--config", str(reg), "--data-dir",
                 str(data_dir), "--out", str(out / "r.html"), "--json", str(out / "r.json"),
                 "--pdf", str(out / "r.pdf"), "--png-dir", str(out / "png"),
                 "--as-of", str(clock.now())])
    assert code == 0
    doc = orjson.loads((out / "r.json").read_bytes())
    direct = build_report(routines.config, routines.store, AlertData(engine.store.path),
                          "month", "2026-11", clock.now())
    assert doc == orjson.loads(orjson.dumps(direct))
    assert (out / "r.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert (out / "r.pdf").read_bytes()[:5] == b"%PDF-"
    pngs = sorted(p.name for p in (out / "png").iterdir())
    assert pngs == [f"report-2026-11-{n}.png" for n in
                    ("alerts", "completeness", "response", "routines")]
    assert main(["report", "--month", "2026-13", "--config", str(reg), "--out", "x"]) == 2


def _tier_chart_rows(html: str) -> dict[str, str]:
    """The district's median-time-to-acknowledge chart, its SVG markup per tier label."""
    svg = re.search(r'<svg[^>]*aria-label="[^"]*Median time to acknowledge[^"]*".*?</svg>', html)
    assert svg is not None
    rows = svg.group(0).split('<text x="8" ')[2:]  # [0] before the title, [1] the title
    return {lab: row for row in rows for lab in TIER_LABELS.values() if f">{lab}<" in row}


def test_a_tier_without_acknowledgements_has_no_median_not_zero(scenario: Any) -> None:
    """Tier 3 acknowledged nothing on 2026-11-10: the JSON keeps null, the HTML chart and the
    matplotlib chart draw no bar (a 0 there reads as "acknowledged at once")."""
    routines, engine, _clock = scenario
    rep = build_report(routines.config, routines.store, AlertData(engine.store.path), "day",
                       "2026-11-10", AS_OF_ALERTS)
    tiers = rep["district"]["alerts"]["response"]["tiers"]
    assert tiers["3"]["time_to_ack_s"] == {"n": 0, "median": None, "p90": None}
    rows = _tier_chart_rows(render_html(rep))
    assert len(rows) == 4
    town, district = TIER_LABELS["3"], TIER_LABELS["4"]
    assert "no acknowledgements" in rows[town] and "<rect" not in rows[town]
    assert ">0<" not in rows[town]
    assert "<rect" in rows[district] and ">400<" in rows[district]
    response = dict(_figures(rep))["response"]
    ax = response.axes[0]
    heights = [b.get_height() for b in ax.patches]  # 4 median bars, then 4 p90 bars
    assert heights[3] == pytest.approx(400 / 60) and math.isnan(heights[2])
    assert math.isnan(heights[6])
    assert "no acknowledgements" in [t.get_text() for t in ax.texts]


def test_monitored_figures_of_a_running_day_are_pending_or_so_far(tmp_path: Path) -> None:
    """Three of four residents stream every minute from the service's start (Nov 1 10:00).
    Daily checks run at 08:00 over the 24 h before; a report never says "0 monitored"
    for a period no check has looked at yet."""
    config = registry()
    devices = DeviceTable.from_config(config)
    state = StateStore(len(devices))
    start = local(2026, 11, 1, 10)
    clock = SimClock(start)
    routines, engine = make_routines(config, clock, tmp_path, alerts=True, state=state)
    assert engine is not None
    data = AlertData(engine.store.path)
    fed = start

    def stream_until(t: float) -> None:  # rows 0-2 (r-1..r-3) send a sample every minute
        nonlocal fed
        minutes = np.arange(fed, t, 60.0) + 5
        cols = SampleColumns.empty(3 * len(minutes))
        cols.row = np.repeat(np.array([0, 1, 2], np.int32), len(minutes))
        cols.ts = np.tile(minutes, 3)
        cols.hr = np.full(len(cols.ts), 70.0, np.float32)
        cols.worn = np.ones(len(cols.ts), np.int8)
        state.append(cols.sorted_by_row_ts(), t)
        fed = t
        run_until(routines, clock, t)

    def report(kind: str, label: str) -> dict[str, Any]:
        return build_report(config, routines.store, data, kind, label, clock.now())

    try:
        routines.tick(start)
        stream_until(local(2026, 11, 1, 14))
        # The start day: its 08:00 check was before the start, so none will run in it.
        rep = report("day", "2026-11-01")
        sec = rep["district"]
        assert (sec["residents_monitored"], sec["completeness"]) == (None, None)
        assert (sec["monitoring_state"], sec["next_check_at"]) == ("no_checks", None)
        assert rep["period"]["finished"] is False
        html = render_html(rep)
        assert "— / 4" in html and "0 / 4" not in html
        assert ("已监测居民：本期没有进行每天一监测 Residents monitored: no daily check ran in "
                "this period") in html
        assert "The period is not over: figures are so far, as of 2026-11-01 14:00" in html
        assert "本期尚未结束：数据截至 2026-11-01 14:00" in html
        assert "<h1>监管日报 Daily supervision report — 2026-11-01</h1>" in html

        # Nov 2 before 08:00: the day's check is still to run.
        stream_until(local(2026, 11, 2, 7))
        sec = report("day", "2026-11-02")["district"]
        assert (sec["residents_monitored"], sec["monitoring_state"]) == (None, "pending")
        assert sec["next_check_at"] == local(2026, 11, 2, 8)
        html = render_html(report("day", "2026-11-02"))
        assert "pending: the period&#x27;s first daily check runs 2026-11-02 08:00" in html
        assert "0 / 4" not in html

        # After it: 22 h expected (from 10:00), received by three of four; the day's figure
        # is final (one check a day) though the day runs on.
        stream_until(local(2026, 11, 2, 9))
        rep = report("day", "2026-11-02")
        sec = rep["district"]
        assert (sec["residents_monitored"], sec["daily_checks"]) == (3, 4)
        assert (sec["monitoring_state"], sec["next_check_at"]) == ("final", None)
        assert sec["completeness"] == 0.75
        assert rep["towns"]["lishi"]["residents_monitored"] == 0  # r-4 sent nothing
        html = render_html(rep)
        assert "<b>3 / 4</b><span>已监测居民 Residents monitored</span>" in html
        # The month: so far, with the next check named.
        sec = report("month", "2026-11")["district"]
        assert (sec["residents_monitored"], sec["monitoring_state"]) == (3, "so_far")
        assert sec["next_check_at"] == local(2026, 11, 3, 8)
        html = render_html(report("month", "2026-11"))
        assert ("Residents monitored so far (as of 2026-11-02 09:00; next daily check "
                "2026-11-03 08:00)") in html
        # A finished day reads as such; a future one is pending on its first check.
        assert report("month", "2026-10")["district"]["monitoring_state"] == "no_checks"
        sec = report("day", "2026-11-05")["district"]
        assert (sec["monitoring_state"], sec["next_check_at"]) == (
            "pending", local(2026, 11, 5, 8))
    finally:
        routines.close()
        engine.close()


def _named_registry() -> Any:
    """The test registry with Chinese names for a town, an institution and two carers (inst-b
    and s3 keep no name: they show by id)."""
    base = registry()
    staff = [s.model_dump(exclude_defaults=True) for s in base.staff]
    staff[0]["name"], staff[1]["name"] = "张丽", "王芳"  # s1, s2
    return registry(towns=[{"id": "gufu", "name": "古富镇"}, {"id": "lishi"}],
                    institutions=[{"id": "inst-a", "name": "康宁居家养老服务中心",
                                   "towns": ["gufu"]}, {"id": "inst-b", "towns": ["lishi"]}],
                    staff=staff)


def test_report_uses_glossary_terms_and_registry_names(tmp_path: Path) -> None:
    """The QA findings: glossary titles and tier names, Chinese first; routine, state and
    alert-kind names, not ids; institutions and staff by their registry names. The JSON keeps
    its ids and adds the names beside them."""
    config = _named_registry()
    clock = SimClock(local(2026, 11, 1))
    routines, engine = make_routines(config, clock, tmp_path, alerts=True)
    assert engine is not None
    try:
        routines.tick(clock.now())
        run_until(routines, clock, local(2026, 11, 3, 10))
        routines.complete("weekly_call:r-1:2026-W45", by="s1", now=clock.now(), notes="ok")
        engine.raise_manual("r-2", kind="fall", severity="critical", by="test", note="x",
                            now=clock.now())
        rep = build_report(config, routines.store, AlertData(engine.store.path), "month",
                           "2026-11", clock.now())
        ro = rep["district"]["routines"]
        # machine-readable: keys are ids as before; names beside them, per section
        assert set(ro["by_institution"]) == {"inst-a", "inst-b"}
        assert ro["names"] == {
            "institutions": {"inst-a": "康宁居家养老服务中心", "inst-b": "inst-b"},
            "staff": {"s1": "张丽", "s2": "王芳", "s3": "s3"}}
        assert rep["towns"]["lishi"]["routines"]["names"] == {
            "institutions": {"inst-b": "inst-b"}, "staff": {"s3": "s3"}}
        assert rep["district"]["alerts"]["by_kind"] == {"fall": 1}
        assert ro["by_kind"]["weekly_call"]["done"] == 1

        html = render_html(rep)
        assert "<h1>月度监管报告 Monthly supervision report — 2026-11</h1>" in html
        assert "<html lang='zh-CN'>" in html
        for tier in ("服务人员 Service staff", "服务机构（第三方专业机构） Service institution",
                     "镇（街道）民政办 Town / street office", "区级救助服务中心 District centre"):
            assert f"<td>{tier}</td>" in html, tier  # the response-by-tier table
        for old in ("机构<", "镇街", "区级<", "监管报告 —", "Monthly supervision report 监管报告"):
            assert old not in html, old
        assert "<td>每周一电话 Weekly call</td>" in html and "每天一监测 Daily monitoring" in html
        assert ">跌倒 Fall<" in html  # the alerts-by-kind chart, not `fall`
        assert ">fall<" not in html
        assert "<th>按时完成 Done on time</th><th>逾期完成 Done late</th>" in html
        assert "<th>危急 Critical</th>" in html
        # registry names with the id in small text; an unnamed one by its id alone
        assert ("<td><span title='inst-a'>康宁居家养老服务中心</span> <small>inst-a</small></td>"
                in html)
        assert "<td><span title='s1'>张丽</span> <small>s1</small></td>" in html
        assert "<td>s3</td>" in html and "<td>inst-b</td>" in html
        assert "<span title='gufu'>古富镇</span> <small>镇（街道） Town · gufu</small>" in html
        assert "<td>s1</td>" not in html and "<td>inst-a</td>" not in html
        # one town's page names that town's people only
        lishi = render_html(rep, "lishi")
        assert "张丽" not in lishi and "<td>s3</td>" in lishi
        assert "<script" not in html and "http://" not in html.replace(
            'xmlns="http://www.w3.org/2000/svg"', "")
    finally:
        routines.close()
        engine.close()


def test_report_labels_reuse_the_console_names() -> None:
    """The report's Chinese routine, outcome and severity names are the console's
    (common.js), its alert kinds console.words.KIND_ZH; every alert kind has both names."""
    from console.words import KIND_EN, KIND_ZH
    from detectors.registry import all_kinds
    from routines.html import OUTCOME_NAMES, ROUTINE_NAMES, SEVERITY_LABELS, alert_kind_label

    js = (Path(__file__).resolve().parents[1] / "console/static/common.js").read_text("utf-8")
    zh = js[js.index("zh: {"):js.index("en: {")]

    def console(key: str) -> str:
        m = re.search(rf'\b{key}: "([^"]*)"', zh)
        assert m is not None, key
        return m.group(1)

    for k, (name, _en) in ROUTINE_NAMES.items():
        assert console(f"rk_{k}") == name
    for k, (name, _en) in OUTCOME_NAMES.items():
        assert console(f"oc_{k}") == name
    for k, (name, _en) in SEVERITY_LABELS.items():
        assert console(f"sev_{k}") == name
    assert set(all_kinds()) <= set(KIND_ZH) and set(KIND_EN) == set(KIND_ZH)
    assert alert_kind_label("hypertensive_crisis") == "高血压危象 Hypertensive crisis"
    assert alert_kind_label("k1") == "k1"  # unknown: its id, never a guess


def test_charts_are_bilingual_with_a_cjk_font_else_english(scenario: Any, monkeypatch: Any,
                                                           tmp_path: Path) -> None:
    import warnings

    import routines.charts as charts

    routines, engine, clock = scenario
    rep = build_report(routines.config, routines.store, AlertData(engine.store.path), "month",
                       "2026-11", clock.now())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs on a machine without a CJK font
        figs = dict(_figures(rep, zh=True))
    assert figs["completeness"].axes[0].get_title().startswith("每日数据完整率 Data completeness")
    ticks = [t.get_text() for t in figs["response"].axes[0].get_xticklabels()]
    assert ticks[1] == "服务机构（第三方专业机构）\nService institution"
    legend = [t.get_text() for t in figs["routines"].axes[0].get_legend().get_texts()]
    assert legend[0] == "按时完成 Done on time"
    english = dict(_figures(rep))
    assert english["completeness"].axes[0].get_title().startswith("Data completeness")
    if charts.cjk_font() is not None:  # drawn with it: no glyph is missing (no empty boxes)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            charts.write_pdf(rep, tmp_path / "zh.pdf")
            charts.write_pngs(rep, tmp_path / "png")
        assert not [w for w in seen if "missing from font" in str(w.message)]
    monkeypatch.setattr(charts, "cjk_font", lambda: None)  # a machine without CJK fonts
    with charts.chart_fonts() as zh:
        assert zh is False

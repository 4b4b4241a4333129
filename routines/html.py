"""The supervision report as one self-contained HTML page (inline CSS and SVG charts, no
scripts, no external requests): for the console, for printing and for sending upwards."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from routines.schedule import KINDS

KIND_LABELS = {"daily_check": "Daily check 每天一监测", "weekly_call": "Weekly call 每周一电话",
               "monthly_inspection": "Monthly inspection 每月一排查",
               "monthly_visit": "Monthly visit 每月一服务"}
TIER_LABELS = {"1": "Service staff 服务人员", "2": "Institution 机构", "3": "Town 镇街",
               "4": "District 区级"}
STATE_COLOURS = {"done": "#2e7d32", "late": "#f9a825", "missed": "#c62828", "open": "#90a4ae"}
SEV_COLOURS = {"critical": "#b71c1c", "high": "#e65100", "medium": "#f9a825", "low": "#607d8b"}

CSS = """
body{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:24px;
color:#1c2833;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;border-bottom:2px solid #1565c0;
padding-bottom:4px;margin-top:28px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:#566573;font-size:13px}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #d5d8dc;border-radius:6px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:22px}.card span{font-size:12px;color:#566573}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #d5d8dc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#eaf2f8}
.charts{display:flex;gap:16px;flex-wrap:wrap}svg{background:#fbfcfc;border:1px solid #eee}
@media print{body{margin:0}h2{page-break-before:auto}}
"""


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{100 * float(v):.1f}%"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def _dur(seconds: Any) -> str:
    if seconds is None:
        return "–"
    s = float(seconds)
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.0f} s"


def bar_chart(title: str, items: list[tuple[str, float | None]], colour: str = "#1565c0",
              width: int = 480, pct: bool = False, missing: str = "–") -> str:
    """Horizontal bars as inline SVG; a None value gets no bar, only the `missing` text."""
    row, left = 22, 200
    height = 34 + row * max(1, len(items))
    top = max((v for _, v in items if v is not None), default=0.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="8" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    for i, (label, value) in enumerate(items):
        y = 28 + i * row
        if value is None:  # no value is not zero: a zero-length bar would read as one
            parts.append(f'<text x="8" y="{y + 14}" font-size="12">{escape(label[:30])}</text>'
                         f'<text x="{left}" y="{y + 14}" font-size="12" fill="#888">'
                         f'{escape(missing)}</text>')
            continue
        w = (width - left - 60) * (value / top)
        shown = _fmt(value, pct) if pct else (f"{value:g}")
        parts.append(f'<text x="8" y="{y + 14}" font-size="12">{escape(label[:30])}</text>'
                     f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="15" fill="{colour}"/>'
                     f'<text x="{left + w + 4:.1f}" y="{y + 14}" font-size="12">{shown}</text>')
    if not items:
        parts.append('<text x="8" y="44" font-size="12" fill="#888">no data</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_chart(title: str, rows: list[tuple[str, dict[str, int]]], width: int = 480) -> str:
    """Horizontal stacked bars of task states as inline SVG, with a legend."""
    row, left = 22, 200
    height = 52 + row * max(1, len(rows))
    top = max((sum(c.get(s, 0) for s in STATE_COLOURS) for _, c in rows), default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="8" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    for i, (label, counts) in enumerate(rows):
        y, x = 28 + i * row, float(left)
        parts.append(f'<text x="8" y="{y + 14}" font-size="12">{escape(label[:30])}</text>')
        for state, colour in STATE_COLOURS.items():
            w = (width - left - 20) * counts.get(state, 0) / top
            if w > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="15" '
                             f'fill="{colour}"><title>{state}: {counts.get(state, 0)}</title>'
                             f'</rect>')
                x += w
    ly = height - 10
    for j, (state, colour) in enumerate(STATE_COLOURS.items()):
        parts.append(f'<rect x="{8 + j * 80}" y="{ly - 10}" width="10" height="10" '
                     f'fill="{colour}"/><text x="{22 + j * 80}" y="{ly}" font-size="11">'
                     f'{state}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, points: list[tuple[str, float | None]], width: int = 480,
               pct: bool = True) -> str:
    """A daily series as an inline SVG polyline (gaps where a value is missing)."""
    height, left, bottom = 180, 40, 30
    n = max(1, len(points) - 1)
    vals = [v for _, v in points if v is not None]
    top = 1.0 if pct else (max(vals) if vals else 1.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="8" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" '
             f'y2="{height - bottom}" stroke="#999"/>']
    xy = []
    for i, (_label, v) in enumerate(points):
        if v is None:
            continue
        x = left + (width - left - 10) * i / n
        y = (height - bottom) - (height - bottom - 30) * (v / top)
        xy.append(f"{x:.1f},{y:.1f}")
    if xy:
        parts.append(f'<polyline fill="none" stroke="#1565c0" stroke-width="2" '
                     f'points="{" ".join(xy)}"/>')
    if points:
        parts.append(f'<text x="{left}" y="{height - 10}" font-size="11">'
                     f'{escape(points[0][0])}</text><text x="{width - 80}" y="{height - 10}" '
                     f'font-size="11">{escape(points[-1][0])}</text>')
    parts.append(f'<text x="4" y="34" font-size="11">{_fmt(top, pct) if pct else top}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{escape(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _routine_rows(group: dict[str, dict[str, Any]], labels: dict[str, str] | None = None
                  ) -> list[list[str]]:
    return [[(labels or {}).get(k, k), *(str(v[s]) for s in ("done", "late", "missed", "open")),
             str(v["total"]), _fmt(v["on_time_share"], pct=True),
             *(str(v["outcomes"][o]) for o in ("not_reached", "concern", "hazard_found"))]
            for k, v in group.items()]


def _when(ts: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")


def monitoring_cards(sec: dict[str, Any], tz: ZoneInfo, as_of: float
                     ) -> list[tuple[str, str]]:
    """(label, value) of the residents-monitored and completeness cards, saying when the
    figures are so far (more daily checks to run in the period) or pending (none ran yet)."""
    state, registered = sec["monitoring_state"], sec["residents_registered"]
    if state in ("pending", "no_checks"):
        why = (f"pending: the period's first daily check runs {_when(sec['next_check_at'], tz)}"
               if state == "pending" else "no daily check ran in this period")
        return [(f"Residents monitored: {why}", f"— / {registered}"),
                (f"Data completeness: {why}", "—")]
    so_far = (f" so far (as of {_when(as_of, tz)}; next daily check "
              f"{_when(sec['next_check_at'], tz)})" if state == "so_far" else "")
    return [(f"Residents monitored{so_far}", f"{sec['residents_monitored']} / {registered}"),
            (f"Data completeness{so_far}", _fmt(sec["completeness"], pct=True))]


def section_html(title: str, sec: dict[str, Any], tz: ZoneInfo, as_of: float,
                 charts: bool = True) -> str:
    """One town's (or the district's) part of the report."""
    al, ro = sec["alerts"], sec["routines"]
    cards = [*monitoring_cards(sec, tz, as_of),
             ("Alerts", str(al["total"])),
             ("Escalations to town / district", f"{al['escalations']['3']} / "
              f"{al['escalations']['4']}"),
             ("Routines on time", _fmt(_on_time(ro), pct=True))]
    out = [f"<h2>{escape(title)}</h2><div class='cards'>"]
    out += [f"<div class='card'><b>{escape(v)}</b><span>{escape(k)}</span></div>"
            for k, v in cards]
    out.append("</div>")
    if charts:
        out.append("<div class='charts'>")
        kinds: dict[str, int] = al["by_kind"]
        out.append(bar_chart("Alerts by kind", [(k, float(n)) for k, n in
                                                sorted(kinds.items(), key=lambda kv: -kv[1])]))
        out.append(stacked_chart("Routines by kind", [(KIND_LABELS[k], ro["by_kind"][k])
                                                      for k in KINDS]))
        # a tier where nothing was acknowledged has no median (not 0 s: "at once")
        out.append(bar_chart("Median time to acknowledge (s), by tier acknowledged", [
            (TIER_LABELS[t], v["time_to_ack_s"]["median"])
            for t, v in al["response"]["tiers"].items()], colour="#6a1b9a",
            missing="— no acknowledgements"))
        out.append("</div>")
    out.append("<h3>Alerts by severity</h3>")
    out.append(_table(list(al["by_severity"]), [[str(v) for v in al["by_severity"].values()]]))
    out.append("<h3>Response by tier</h3>")
    rows = [[TIER_LABELS[t], str(v["reached"]), str(v["acknowledged_here"]),
             _dur(v["time_to_ack_s"]["median"]), _dur(v["time_to_ack_s"]["p90"]),
             _dur(v["time_to_resolve_s"]["median"]), _dur(v["time_to_resolve_s"]["p90"]),
             _fmt(v["acked_within_tier_time"], pct=True)]
            for t, v in al["response"]["tiers"].items()]
    out.append(_table(["Tier", "Reached", "Acknowledged here", "Ack median", "Ack p90",
                       "Resolve median", "Resolve p90", "Acked within tier time"], rows))
    head = ["", "Done", "Late", "Missed", "Open", "Total", "On time",
            "Not reached 未联系上", "Concern 需关注", "Hazard 发现隐患"]
    out.append("<h3>Routines by kind</h3>")
    out.append(_table(head, _routine_rows(ro["by_kind"], KIND_LABELS)))
    out.append("<h3>Routines by institution</h3>")
    out.append(_table(head, _routine_rows(ro["by_institution"])))
    out.append("<h3>Routines by staff</h3>")
    out.append(_table(head, _routine_rows(ro["by_staff"])))
    return "".join(out)


def _on_time(ro: dict[str, Any]) -> float | None:
    done = sum(v["done"] for v in ro["by_kind"].values())
    closed = sum(v["done"] + v["late"] + v["missed"] for v in ro["by_kind"].values())
    return done / closed if closed else None


def render_html(report: dict[str, Any], town: str | None = None) -> str:
    """The whole report (district then each town), or one town's part only."""
    p = report["period"]
    tz = ZoneInfo(p["timezone"])
    as_of = _when(report["as_of"], tz)
    what = "Monthly" if p["kind"] == "month" else "Daily"
    unfinished = ("" if report["as_of"] >= p["end"] else
                  f" The period is not over: figures are so far, as of {as_of}.")
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>CareWatch {what.lower()} supervision report {escape(p['label'])}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>{what} supervision report 监管报告 — {escape(p['label'])}</h1>",
             f"<div class='meta'>Time zone {escape(p['timezone'])}; figures as of {as_of}. "
             "Times to acknowledge and resolve run from the alert's opening; p90 by linear "
             "interpolation. Residents monitored: those with any data in the period's daily "
             f"checks, each covering the 24 h before it runs.{unfinished}</div>"]
    if town is None:
        parts.append("<div class='charts'>")
        parts.append(line_chart("Data completeness per day",
                                [(d["day"], d["completeness"]) for d in report["daily"]]))
        parts.append(line_chart("Alerts per day", [(d["day"], float(d["alerts"]))
                                                   for d in report["daily"]], pct=False))
        parts.append("</div>")
        parts.append(section_html("District 区级", report["district"], tz, report["as_of"]))
    for tid, sec in report["towns"].items():
        if town is None or tid == town:
            parts.append(section_html(f"Town {sec['name']} ({tid})", sec, tz, report["as_of"]))
    parts.append("</body></html>")
    return "".join(parts)

"""The supervision report as one self-contained HTML page (inline CSS and SVG charts, no
scripts, no external requests): for the console, for printing and for sending upwards."""

from __future__ import annotations

import math
import unicodedata
from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from console.words import KIND_EN, KIND_ZH
from routines.schedule import KINDS

# Labels are Chinese first, English after ("跌倒 Fall"), as on the console; the Chinese are
# the glossary's terms (/work/shared/GLOSSARY.md) where it has one, else the console's
# (console/static/common.js). The JSON keeps its ids: these are for people only.
ROUTINE_NAMES: dict[str, tuple[str, str]] = {
    "daily_check": ("每天一监测", "Daily monitoring"), "weekly_call": ("每周一电话", "Weekly call"),
    "monthly_inspection": ("每月一排查", "Monthly inspection"),
    "monthly_visit": ("每月一服务", "Monthly service")}
TIER_NAMES: dict[str, tuple[str, str]] = {
    "1": ("服务人员", "Service staff"), "2": ("服务机构（第三方专业机构）", "Service institution"),
    "3": ("镇（街道）民政办", "Town / street office"), "4": ("区级救助服务中心", "District centre")}
STATE_NAMES: dict[str, tuple[str, str]] = {
    "done": ("按时完成", "Done on time"), "late": ("逾期完成", "Done late"),
    "missed": ("逾期未完成", "Missed"), "open": ("待完成", "Open")}
OUTCOME_NAMES: dict[str, tuple[str, str]] = {
    "ok": ("正常", "OK"), "concern": ("需关注", "Concern"),
    "hazard_found": ("发现隐患", "Hazard found"), "not_reached": ("未联系上", "Not reached"),
    "other": ("其他", "Other")}
SEVERITY_LABELS: dict[str, tuple[str, str]] = {
    "critical": ("危急", "Critical"), "high": ("高", "High"), "medium": ("中", "Medium"),
    "low": ("低", "Low")}
REPORT_TITLES: dict[str, tuple[str, str]] = {
    "month": ("月度监管报告", "Monthly supervision report"),
    # the glossary names no daily report; the console's picker calls it 日报
    "day": ("监管日报", "Daily supervision report")}


def bi(zh: str, en: str) -> str:
    """A bilingual label: Chinese, then English."""
    return f"{zh} {en}"


KIND_LABELS = {k: bi(*v) for k, v in ROUTINE_NAMES.items()}
TIER_LABELS = {k: bi(*v) for k, v in TIER_NAMES.items()}
STATE_LABELS = {k: bi(*v) for k, v in STATE_NAMES.items()}
STATE_COLOURS = {"done": "#2e7d32", "late": "#f9a825", "missed": "#c62828", "open": "#90a4ae"}
SEV_COLOURS = {"critical": "#b71c1c", "high": "#e65100", "medium": "#f9a825", "low": "#607d8b"}
UNASSIGNED = bi("未指定", "Unassigned")  # the report's "-": a task with no institution / owner


def alert_kind_label(kind: str) -> str:
    """"跌倒 Fall" for a known alert kind; an unknown one stays its id."""
    zh = KIND_ZH.get(kind)
    return bi(zh, KIND_EN.get(kind, kind)) if zh else kind


class Markup(str):
    """Text that is HTML already (not escaped again by `_table`)."""


def name_cell(ident: str, names: dict[str, str]) -> Markup:
    """A registry name with its id in small text and as the title (the id alone if the
    registry has no other name)."""
    if ident == "-":
        return Markup(escape(UNASSIGNED))
    name = names.get(ident, ident)
    if name == ident:
        return Markup(escape(ident))
    return Markup(f"<span title='{escape(ident)}'>{escape(name)}</span> "
                  f"<small>{escape(ident)}</small>")


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
small{color:#566573;font-weight:normal;font-size:11px}.meta p{margin:2px 0}
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


def text_width(text: str, size: int = 12) -> float:
    """Rough width in px of SVG text: a wide (CJK) character is about one em, others 0.6."""
    return sum(size if unicodedata.east_asian_width(c) in "WF" else 0.6 * size for c in text)


def _clip(text: str, px: float, size: int = 12) -> str:
    """`text` cut to about `px` wide (with an ellipsis)."""
    if text_width(text, size) <= px:
        return text
    while text and text_width(text + "…", size) > px:
        text = text[:-1]
    return text + "…"


def _label_column(labels: list[str]) -> int:
    """The label column's width: the widest label (bilingual ones are long), 200-360 px."""
    return math.ceil(min(360, max([200.0, *(text_width(x) + 16 for x in labels)])))


def bar_chart(title: str, items: list[tuple[str, float | None]], colour: str = "#1565c0",
              width: int = 480, pct: bool = False, missing: str = "–") -> str:
    """Horizontal bars as inline SVG; a None value gets no bar, only the `missing` text."""
    row, left = 22, _label_column([x for x, _ in items])
    width = math.ceil(max(width, left + 280, text_width(title, 13) + 16))
    height = 34 + row * max(1, len(items))
    top = max((v for _, v in items if v is not None), default=0.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="8" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    for i, (label, value) in enumerate(items):
        y = 28 + i * row
        if value is None:  # no value is not zero: a zero-length bar would read as one
            parts.append(f'<text x="8" y="{y + 14}" font-size="12">'
                         f'{escape(_clip(label, left - 16))}</text>'
                         f'<text x="{left}" y="{y + 14}" font-size="12" fill="#888">'
                         f'{escape(missing)}</text>')
            continue
        w = (width - left - 60) * (value / top)
        shown = _fmt(value, pct) if pct else (f"{value:g}")
        parts.append(f'<text x="8" y="{y + 14}" font-size="12">'
                     f'{escape(_clip(label, left - 16))}</text>'
                     f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="15" fill="{colour}"/>'
                     f'<text x="{left + w + 4:.1f}" y="{y + 14}" font-size="12">{shown}</text>')
    if not items:
        parts.append('<text x="8" y="44" font-size="12" fill="#888">无数据 no data</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_chart(title: str, rows: list[tuple[str, dict[str, int]]], width: int = 480) -> str:
    """Horizontal stacked bars of task states as inline SVG, with a legend (wrapped to as
    many lines as it needs)."""
    row, left = 22, _label_column([x for x, _ in rows])
    width = math.ceil(max(width, left + 200, text_width(title, 13) + 16))
    legend: list[tuple[float, int, str, str]] = []  # x, line, state, colour
    x_at, line = 8.0, 0
    for state, colour in STATE_COLOURS.items():
        w = 14 + text_width(STATE_LABELS[state], 11) + 12
        if x_at + w > width and x_at > 8:
            x_at, line = 8.0, line + 1
        legend.append((x_at, line, state, colour))
        x_at += w
    height = 52 + row * max(1, len(rows)) + 16 * line
    top = max((sum(c.get(s, 0) for s in STATE_COLOURS) for _, c in rows), default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="8" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    for i, (label, counts) in enumerate(rows):
        y, x = 28 + i * row, float(left)
        parts.append(f'<text x="8" y="{y + 14}" font-size="12">'
                     f'{escape(_clip(label, left - 16))}</text>')
        for state, colour in STATE_COLOURS.items():
            w = (width - left - 20) * counts.get(state, 0) / top
            if w > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="15" '
                             f'fill="{colour}"><title>{escape(STATE_LABELS[state])}: '
                             f'{counts.get(state, 0)}</title>'
                             f'</rect>')
                x += w
    for lx, ln, state, colour in legend:
        ly = height - 10 - 16 * (line - ln)
        parts.append(f'<rect x="{lx:.0f}" y="{ly - 10}" width="10" height="10" '
                     f'fill="{colour}"/><text x="{lx + 14:.0f}" y="{ly}" font-size="11">'
                     f'{escape(STATE_LABELS[state])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, points: list[tuple[str, float | None]], width: int = 480,
               pct: bool = True) -> str:
    """A daily series as an inline SVG polyline (gaps where a value is missing)."""
    height, left, bottom = 180, 40, 30
    width = math.ceil(max(width, text_width(title, 13) + 16))
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


def _cell(c: str) -> str:
    return c if isinstance(c, Markup) else escape(c)


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{_cell(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


ROUTINE_STATES_SHOWN = ("done", "late", "missed", "open")
# beside the states, what the completed ones found: a call "done" without reaching the
# resident is not a resident known to be well
OUTCOMES_SHOWN = ("not_reached", "concern", "hazard_found")


def _routine_head(first: str) -> list[str]:
    return [first, *(STATE_LABELS[s] for s in ROUTINE_STATES_SHOWN), bi("合计", "Total"),
            bi("按时完成率", "On time"), *(bi(*OUTCOME_NAMES[o]) for o in OUTCOMES_SHOWN)]


def _routine_rows(group: dict[str, dict[str, Any]], names: dict[str, str] | None
                  ) -> list[list[str]]:
    """One row per key: a routine kind (`names` None) or an institution or staff id."""
    return [[KIND_LABELS.get(k, k) if names is None else name_cell(k, names),
             *(str(v[s]) for s in ROUTINE_STATES_SHOWN),
             str(v["total"]), _fmt(v["on_time_share"], pct=True),
             *(str(v["outcomes"][o]) for o in OUTCOMES_SHOWN)]
            for k, v in group.items()]


def _when(ts: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")


def monitoring_cards(sec: dict[str, Any], tz: ZoneInfo, as_of: float
                     ) -> list[tuple[str, str]]:
    """(label, value) of the residents-monitored and completeness cards, saying when the
    figures are so far (more daily checks to run in the period) or pending (none ran yet)."""
    state, registered = sec["monitoring_state"], sec["residents_registered"]
    monitored, complete = ("已监测居民", "Residents monitored"), ("数据完整率", "Data completeness")
    if state in ("pending", "no_checks"):
        if state == "pending":
            at = _when(sec["next_check_at"], tz)
            why = (f"待定：本期首次每天一监测于 {at} 进行",
                   f"pending: the period's first daily check runs {at}")
        else:
            why = ("本期没有进行每天一监测", "no daily check ran in this period")
        return [(f"{monitored[0]}：{why[0]} {monitored[1]}: {why[1]}", f"— / {registered}"),
                (f"{complete[0]}：{why[0]} {complete[1]}: {why[1]}", "—")]
    zh = en = ""
    if state == "so_far":
        now, nxt = _when(as_of, tz), _when(sec["next_check_at"], tz)
        zh = f"（截至 {now}；下次每天一监测 {nxt}）"
        en = f" so far (as of {now}; next daily check {nxt})"
    return [(f"{monitored[0]}{zh} {monitored[1]}{en}",
             f"{sec['residents_monitored']} / {registered}"),
            (f"{complete[0]}{zh} {complete[1]}{en}", _fmt(sec["completeness"], pct=True))]


def section_html(title: str, sec: dict[str, Any], tz: ZoneInfo, as_of: float,
                 charts: bool = True) -> str:
    """One town's (or the district's) part of the report; `title` is HTML."""
    al, ro = sec["alerts"], sec["routines"]
    names = ro.get("names", {})  # reports from before names were added have none
    cards = [*monitoring_cards(sec, tz, as_of),
             (bi("告警", "Alerts"), str(al["total"])),
             (bi(f"升级至{TIER_NAMES['3'][0]} / {TIER_NAMES['4'][0]}",
                 "Escalations to town office / district centre"),
              f"{al['escalations']['3']} / {al['escalations']['4']}"),
             (bi("四个一按时完成率", "Routines on time"), _fmt(_on_time(ro), pct=True))]
    out = [f"<h2>{title}</h2><div class='cards'>"]
    out += [f"<div class='card'><b>{escape(v)}</b><span>{escape(k)}</span></div>"
            for k, v in cards]
    out.append("</div>")
    if charts:
        out.append("<div class='charts'>")
        kinds: dict[str, int] = al["by_kind"]
        out.append(bar_chart(bi("告警类型", "Alerts by kind"), [
            (alert_kind_label(k), float(n))
            for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])]))
        out.append(stacked_chart(bi("四个一完成情况", "Routines by kind"),
                                 [(KIND_LABELS[k], ro["by_kind"][k]) for k in KINDS]))
        # a tier where nothing was acknowledged has no median (not 0 s: "at once")
        out.append(bar_chart(
            bi("确认用时中位数（秒），按确认时所在层级",
               "Median time to acknowledge (s), by tier acknowledged"),
            [(TIER_LABELS[t], v["time_to_ack_s"]["median"])
             for t, v in al["response"]["tiers"].items()], colour="#6a1b9a",
            missing="— 无确认 no acknowledgements"))
        out.append("</div>")
    out.append(f"<h3>{escape(bi('告警等级', 'Alerts by severity'))}</h3>")
    out.append(_table([bi(*SEVERITY_LABELS.get(s, (s, s))) for s in al["by_severity"]],
                      [[str(v) for v in al["by_severity"].values()]]))
    out.append(f"<h3>{escape(bi('各层级响应', 'Response by tier'))}</h3>")
    rows = [[TIER_LABELS[t], str(v["reached"]), str(v["acknowledged_here"]),
             _dur(v["time_to_ack_s"]["median"]), _dur(v["time_to_ack_s"]["p90"]),
             _dur(v["time_to_resolve_s"]["median"]), _dur(v["time_to_resolve_s"]["p90"]),
             _fmt(v["acked_within_tier_time"], pct=True)]
            for t, v in al["response"]["tiers"].items()]
    out.append(_table([bi("层级", "Tier"), bi("到达", "Reached"),
                       bi("在本级确认", "Acknowledged here"), bi("确认用时中位数", "Ack median"),
                       bi("确认用时 p90", "Ack p90"), bi("办结用时中位数", "Resolve median"),
                       bi("办结用时 p90", "Resolve p90"),
                       bi("本级时限内确认", "Acked within tier time")], rows))
    for key, heading, first, ids in (
            ("by_kind", bi("四个一（按类型）", "Routines by kind"), bi("四个一", "Routine"), None),
            ("by_institution", bi("四个一（按服务机构）", "Routines by institution"),
             TIER_LABELS["2"], names.get("institutions", {})),
            ("by_staff", bi("四个一（按服务人员）", "Routines by staff"), TIER_LABELS["1"],
             names.get("staff", {}))):
        out.append(f"<h3>{escape(heading)}</h3>")
        out.append(_table(_routine_head(first), _routine_rows(ro[key], ids)))
    return "".join(out)


def _on_time(ro: dict[str, Any]) -> float | None:
    done = sum(v["done"] for v in ro["by_kind"].values())
    closed = sum(v["done"] + v["late"] + v["missed"] for v in ro["by_kind"].values())
    return done / closed if closed else None


def _town_title(tid: str, name: str) -> str:
    """A town section's heading: its name, with its id in small text unless that is all."""
    shown = escape(name) if name and name != tid else escape(tid)
    small = f" · {escape(tid)}" if name and name != tid else ""
    return f"<span title='{escape(tid)}'>{shown}</span> <small>镇（街道） Town{small}</small>"


def render_html(report: dict[str, Any], town: str | None = None) -> str:
    """The whole report (district then each town), or one town's part only."""
    p = report["period"]
    tz = ZoneInfo(p["timezone"])
    as_of = _when(report["as_of"], tz)
    zh, en = REPORT_TITLES.get(p["kind"], REPORT_TITLES["month"])
    label = escape(p["label"])
    unfinished_zh = "" if report["as_of"] >= p["end"] else f"本期尚未结束：数据截至 {as_of}。"
    unfinished_en = ("" if report["as_of"] >= p["end"] else
                     f" The period is not over: figures are so far, as of {as_of}.")
    parts = ["<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
             f"<title>CareWatch {zh} {en} {label}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>{zh} {en} — {label}</h1>",
             f"<div class='meta'><p>时区 {escape(p['timezone'])}；数据截至 {as_of}。"
             "确认、办结用时从告警产生时起算；p90 为线性插值。已监测居民：本期每天一监测中有任何"
             f"数据的居民，每次监测覆盖其进行前 24 小时。{unfinished_zh}</p>"
             f"<p>Time zone {escape(p['timezone'])}; figures as of {as_of}. "
             "Times to acknowledge and resolve run from the alert's opening; p90 by linear "
             "interpolation. Residents monitored: those with any data in the period's daily "
             f"checks, each covering the 24 h before it runs.{unfinished_en}</p></div>"]
    if town is None:
        parts.append("<div class='charts'>")
        parts.append(line_chart(bi("每日数据完整率", "Data completeness per day"),
                                [(d["day"], d["completeness"]) for d in report["daily"]]))
        parts.append(line_chart(bi("每日告警数", "Alerts per day"),
                                [(d["day"], float(d["alerts"])) for d in report["daily"]],
                                pct=False))
        parts.append("</div>")
        parts.append(section_html(escape(bi("全区", "District")), report["district"], tz,
                                  report["as_of"]))
    for tid, sec in report["towns"].items():
        if town is None or tid == town:
            parts.append(section_html(_town_title(tid, sec["name"]), sec, tz, report["as_of"]))
    parts.append("</body></html>")
    return "".join(parts)

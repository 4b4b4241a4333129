"""Printable charts of a supervision report with matplotlib: PNG files or one PDF.

Labels are bilingual (Chinese, then English) like the HTML report when matplotlib has a CJK
font (`cjk_font`); without one they are English only, since the Chinese would print as
empty boxes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from console.words import KIND_EN
from routines.html import (
    ROUTINE_NAMES,
    STATE_COLOURS,
    STATE_NAMES,
    TIER_NAMES,
    alert_kind_label,
)
from routines.schedule import KINDS

# Simplified-Chinese sans fonts commonly installed (Linux, Windows, macOS), preferred first
CJK_FONTS = ("Noto Sans CJK SC", "Source Han Sans SC", "Noto Sans SC", "WenQuanYi Micro Hei",
             "WenQuanYi Zen Hei", "Microsoft YaHei", "SimHei", "PingFang SC", "Heiti SC")


def cjk_font() -> str | None:
    """The first of `CJK_FONTS` matplotlib knows, if any."""
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    return next((f for f in CJK_FONTS if f in have), None)


@contextmanager
def chart_fonts() -> Iterator[bool]:
    """Draw with the CJK font (Latin text falls back to DejaVu Sans) while inside; yields
    whether the labels may be Chinese."""
    import matplotlib

    font = cjk_font()
    if font is None:
        yield False
        return
    with matplotlib.rc_context({"font.family": [font, "DejaVu Sans"]}):
        yield True


def _minutes(seconds: float | None) -> float:
    return float("nan") if seconds is None else seconds / 60


def _figures(report: dict[str, Any], zh: bool = False) -> list[tuple[str, Any]]:
    """The report's charts; labels bilingual if `zh`, else English (see `chart_fonts`)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe on any thread
    import matplotlib.pyplot as plt

    def lab(z: str, en: str, sep: str = " ") -> str:
        return f"{z}{sep}{en}" if zh else en

    label = report["period"]["label"]
    d = report["district"]
    figs: list[tuple[str, Any]] = []

    fig, ax = plt.subplots(figsize=(8, 3.5))
    days = [x["day"][-2:] for x in report["daily"]]
    comp = [(x["completeness"] * 100 if x["completeness"] is not None else float("nan"))
            for x in report["daily"]]
    ax.plot(days, comp, marker="o", ms=3)
    ax.set_ylim(0, 105)
    ax.set_ylabel(lab("占应收分钟数 %", "% of expected minutes"))
    ax.set_title(f"{lab('每日数据完整率', 'Data completeness per day')}, {label}")
    figs.append(("completeness", fig))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    by_kind = d["alerts"]["by_kind"]
    ax.barh([alert_kind_label(k) if zh else KIND_EN.get(k, k) for k in by_kind],
            list(by_kind.values()), color="#1565c0")
    ax.set_title(f"{lab('告警类型', 'Alerts by kind')}, {label} "
                 f"({lab('合计', 'total')} {d['alerts']['total']})")
    figs.append(("alerts", fig))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    left = [0.0] * len(KINDS)
    kinds = [lab(*ROUTINE_NAMES[k]) for k in KINDS]
    for state, colour in STATE_COLOURS.items():
        vals = [float(d["routines"]["by_kind"][k][state]) for k in KINDS]
        ax.barh(kinds, vals, left=left, color=colour, label=lab(*STATE_NAMES[state]))
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{lab('四个一完成情况', 'Routines by state')}, {label}")
    figs.append(("routines", fig))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    tiers = d["alerts"]["response"]["tiers"]
    names = [lab(*TIER_NAMES[t], sep="\n") for t in tiers]
    # no acknowledgement at a tier is no bar (NaN) and a note, not 0 min ("at once")
    med = [_minutes(v["time_to_ack_s"]["median"]) for v in tiers.values()]
    p90 = [_minutes(v["time_to_ack_s"]["p90"]) for v in tiers.values()]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], med, 0.4, label=lab("中位数", "median"))
    ax.bar([x + 0.2 for x in xs], p90, 0.4, label="p90")
    for x, v in zip(xs, tiers.values(), strict=True):
        if v["time_to_ack_s"]["median"] is None:
            ax.text(x, 0, lab("无确认", "no acknowledgements"), ha="center", va="bottom",
                    fontsize=8, color="#888", rotation=90)
    ax.set_xticks(list(xs), names, fontsize=8)
    ax.set_ylabel(lab("自告警产生起（分钟）", "minutes from opening"))
    ax.set_title(lab("确认用时，按确认时所在层级", "Time to acknowledge, by tier acknowledged"))
    ax.legend(fontsize=8)
    figs.append(("response", fig))
    for _, f in figs:
        f.tight_layout()
    return figs


def write_pngs(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per chart in `out_dir`; returns the files written."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    label = report["period"]["label"]
    paths = []
    with chart_fonts() as zh:
        for name, fig in _figures(report, zh):
            path = out_dir / f"report-{label}-{name}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            paths.append(path)
    return paths


def write_pdf(report: dict[str, Any], path: Path) -> Path:
    """All charts, one a page, in one PDF."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    path.parent.mkdir(parents=True, exist_ok=True)
    with chart_fonts() as zh, PdfPages(path) as pdf:
        for _, fig in _figures(report, zh):
            pdf.savefig(fig)
            plt.close(fig)
    return path

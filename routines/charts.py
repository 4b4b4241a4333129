"""Printable charts of a supervision report with matplotlib: PNG files or one PDF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from routines.html import STATE_COLOURS
from routines.schedule import KINDS


def _minutes(seconds: float | None) -> float:
    return float("nan") if seconds is None else seconds / 60


def _figures(report: dict[str, Any]) -> list[tuple[str, Any]]:
    import matplotlib

    matplotlib.use("Agg")  # no display; safe on any thread
    import matplotlib.pyplot as plt

    label = report["period"]["label"]
    d = report["district"]
    figs: list[tuple[str, Any]] = []

    fig, ax = plt.subplots(figsize=(8, 3.5))
    days = [x["day"][-2:] for x in report["daily"]]
    comp = [(x["completeness"] * 100 if x["completeness"] is not None else float("nan"))
            for x in report["daily"]]
    ax.plot(days, comp, marker="o", ms=3)
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of expected minutes")
    ax.set_title(f"Data completeness per day, {label}")
    figs.append(("completeness", fig))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    by_kind = d["alerts"]["by_kind"]
    ax.barh(list(by_kind), list(by_kind.values()), color="#1565c0")
    ax.set_title(f"Alerts by kind, {label} (total {d['alerts']['total']})")
    figs.append(("alerts", fig))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    left = [0.0] * len(KINDS)
    for state, colour in STATE_COLOURS.items():
        vals = [float(d["routines"]["by_kind"][k][state]) for k in KINDS]
        ax.barh(list(KINDS), vals, left=left, color=colour, label=state)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Routines by state, {label}")
    figs.append(("routines", fig))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    tiers = d["alerts"]["response"]["tiers"]
    names = [v["tier_name"] for v in tiers.values()]
    # no acknowledgement at a tier is no bar (NaN) and a note, not 0 min ("at once")
    med = [_minutes(v["time_to_ack_s"]["median"]) for v in tiers.values()]
    p90 = [_minutes(v["time_to_ack_s"]["p90"]) for v in tiers.values()]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], med, 0.4, label="median")
    ax.bar([x + 0.2 for x in xs], p90, 0.4, label="p90")
    for x, v in zip(xs, tiers.values(), strict=True):
        if v["time_to_ack_s"]["median"] is None:
            ax.text(x, 0, "no acknowledgements", ha="center", va="bottom", fontsize=8,
                    color="#888", rotation=90)
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("minutes from opening")
    ax.set_title("Time to acknowledge, by tier acknowledged")
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
    for name, fig in _figures(report):
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
    with PdfPages(path) as pdf:
        for _, fig in _figures(report):
            pdf.savefig(fig)
            plt.close(fig)
    return path

"""One district console over `carewatch run --workers N`: who owns what, and how the
workers' answers combine (pure functions, no I/O; `console.gateway` does the requests).

Each worker's console answers for its own towns. The district console asks the owner where
one worker holds the answer (a resident, their alerts and series, a town's report) and asks
every worker where the answer is a list (the board, the resident list, tasks, silences),
merging the lists in the order one console over every town would give. A worker that does
not answer is a monitoring problem in its own right (`worker_down`): its towns are not
being watched, and every page's banner says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from config.models import Config
from console.views import STATUSES, board_key
from ingest.samples import VITALS

# Set by the district console on every action it forwards: epoch seconds after which the
# worker must refuse it (`console.app`), so that an action the console reported as not done
# is never done later by a worker that was hung and resumes.
DEADLINE_HEADER = "X-CareWatch-Deadline"
# worst first: a merged state is the worst of the workers' states
MONITORING_STATES = ("down", "degraded", "ok")
# The resident list's statuses in list order. "unmonitored": the resident's worker does not
# answer, so nothing about them is known now (listed right after open alerts).
UNMONITORED = "unmonitored"
RESIDENT_ORDER = (STATUSES[0], UNMONITORED, *STATUSES[1:])


@dataclass(frozen=True)
class WorkerLink:
    """Where worker `index` answers, and the towns it owns."""

    index: int
    towns: tuple[str, ...]
    url: str  # "http://host:port" (no trailing slash)


@dataclass(frozen=True)
class WorkerDown:
    """A worker that did not answer a request."""

    index: int
    towns: tuple[str, ...]
    reason: str
    since: float | None = None  # when it was first seen not answering, if known


class Owners:
    """Which worker owns each town and resident (the supervisor's partition)."""

    def __init__(self, config: Config, workers: list[WorkerLink]) -> None:
        self.workers = workers
        self.of_town = {t: w.index for w in workers for t in w.towns}
        self.of_resident = {r.id: self.of_town[r.town] for r in config.residents
                            if r.town in self.of_town}
        self.order = {r.id: i for i, r in enumerate(config.residents)}  # registry order

    def worker(self, index: int) -> WorkerLink:
        return self.workers[index]

    def for_resident(self, resident_id: str) -> WorkerLink | None:
        k = self.of_resident.get(resident_id)
        return None if k is None else self.workers[k]

    def for_town(self, town_id: str) -> WorkerLink | None:
        k = self.of_town.get(town_id)
        return None if k is None else self.workers[k]


def down_problem(down: WorkerDown, town_names: dict[str, str]) -> dict[str, Any]:
    """A `/api/health` problem for a worker that does not answer, naming the towns it owns
    (the banner lists them and how long)."""
    return {"code": "worker_down", "level": "down", "since": down.since,
            "detail": f"worker {down.index} ({', '.join(down.towns)}): {down.reason}",
            "worker": down.index, "towns": [town_names.get(t, t) for t in down.towns]}


def merge_health(answers: dict[int, dict[str, Any]], down: list[WorkerDown], now: float,
                 town_names: dict[str, str] | None = None) -> dict[str, Any]:
    """The district's monitoring state: the worst worker's state, every problem (`answers`
    by worker; one problem several workers report, e.g. the broker gone, is listed once with
    all their indices in `workers`), and `worker_down` for each worker that did not answer.
    A silent worker makes the state at least "degraded": the other towns are watched."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    states = []
    for k, doc in answers.items():
        states.append(doc.get("state", "down"))
        for p in doc.get("problems", []):
            key = (p.get("code"), p.get("level"), p.get("detail"))
            if key in merged:
                merged[key]["workers"].append(k)
                since = [s for s in (merged[key].get("since"), p.get("since")) if s is not None]
                merged[key]["since"] = min(since, default=None)
            else:
                merged[key] = {**p, "workers": [k]}
    problems = [*merged.values(), *(down_problem(d, town_names or {}) for d in down)]
    if down:
        states.append("down" if not answers else "degraded")
    state = min(states, key=MONITORING_STATES.index, default="down")
    return {"state": state, "now": now, "problems": problems,
            "workers": len(answers) + len(down), "workers_answering": len(answers)}


def merge_alerts(answers: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """The board: every worker's open alerts, most urgent first (as one console sorts)."""
    rows = [row for doc in answers for row in doc.get("alerts", [])]
    rows.sort(key=board_key)
    return {"now": now, "alerts": rows}


def merge_residents(answers: list[dict[str, Any]], owners: Owners, offset: int, limit: int,
                    now: float) -> dict[str, Any]:
    """The resident list: counts summed; rows in one console's order (alerts first, then
    worst severity, then registry order), then the page. Each worker was asked for its
    first `offset + limit` rows, which hold every row this page can need."""
    counts = {s: 0 for s in RESIDENT_ORDER}
    total = 0
    rows: list[dict[str, Any]] = []
    for doc in answers:
        total += int(doc.get("total", 0))
        for s, k in doc.get("counts", {}).items():
            counts[s] = counts.get(s, 0) + int(k)
        rows += doc.get("residents", [])
    rows.sort(key=lambda r: (RESIDENT_ORDER.index(r["status"]), -int(r["worst_severity"]),
                             owners.order.get(r["resident_id"], len(owners.order))))
    return {"now": now, "total": total, "counts": counts,
            "residents": rows[offset:offset + limit]}


def unmonitored_rows(config: Config, town_names: dict[str, str], resident_ids: list[str],
                     last_alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Resident-list rows for residents whose worker does not answer: registry facts and
    their open alerts as last seen (`last_alerts`, board rows), status "unmonitored" (so
    that they are listed, not left out, while it is down)."""
    wanted = set(resident_ids)
    count: dict[str, int] = {}
    worst: dict[str, int] = {}
    for a in last_alerts:
        rid = str(a["resident_id"])
        count[rid] = count.get(rid, 0) + 1
        worst[rid] = max(worst.get(rid, 0), int(a.get("severity_code", 0)))
    return [{"resident_id": r.id, "name": r.name or r.id, "town_id": r.town,
             "town_name": town_names.get(r.town, r.town), "device_id": r.device,
             "status": UNMONITORED, "open_alerts": count.get(r.id, 0),
             "worst_severity": worst.get(r.id, 0), "last_seen": None,
             "battery": None, "worn": -1, "online": -1, "hr": None, "spo2": None,
             "staff": r.staff, "conditions": list(r.conditions)}
            for r in config.residents if r.id in wanted]


def merge_list(answers: list[dict[str, Any]], key: str, **extra: Any) -> dict[str, Any]:
    """Concatenate one list field of every answer (silences, tasks), keeping `extra`."""
    out: dict[str, Any] = dict(extra)
    out[key] = [item for doc in answers for item in doc.get(key, [])]
    return out


def merge_tasks(answers: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """Tasks of every worker, earliest due first (each worker lists its own in that order),
    with the `mine` view's note (routines.web) summed over the workers."""
    tasks = [t for doc in answers for t in doc.get("tasks", [])]
    tasks.sort(key=lambda t: (float(t.get("due_at") or 0.0), str(t.get("task_id"))))
    view = answers[0].get("view") if answers else None
    out: dict[str, Any] = {"now": now, "view": view, "tasks": tasks}
    notes = [doc["note"] for doc in answers if doc.get("note")]
    if notes:  # same config everywhere: one note, its overdue count over every worker
        out["note"] = {**notes[0], "overdue": sum(int(n.get("overdue", 0)) for n in notes)}
    return out


def unknown_device() -> dict[str, Any]:
    """A record's device part when nothing is known about the device now."""
    return {"last_seen": None, "last_sample_ts": None, "worn": -1, "battery": None,
            "online": -1, "latest": {v: {"value": None, "ts": None} for v in VITALS}}


def stale_note(down: WorkerDown, as_of: float | None) -> dict[str, Any]:
    """Why a page's data is not live: the worker, its towns, since when it has not answered,
    and the time of the data shown (None: only the registry's facts)."""
    return {"worker": down.index, "towns": list(down.towns), "since": down.since,
            "reason": down.reason, "as_of": as_of}


def stale_record(facts: dict[str, Any], thresholds: dict[str, Any],
                 cached: tuple[dict[str, Any], float] | None, last_alerts: list[dict[str, Any]],
                 down: WorkerDown, now: float) -> dict[str, Any]:
    """A resident's record while their worker does not answer, so that staff still see who
    the resident is and who looks after them: the last record this console relayed
    (`cached`: the record and when) or, without one, the registry's facts and no device
    state. Open alerts as last seen on the board or stream (`last_alerts`, newer than any
    record) replace their rows; `stale` says why nothing is live."""
    if cached is not None:
        doc, as_of = dict(cached[0]), cached[1]
    else:
        doc, as_of = {"device": unknown_device(), "alerts": []}, None
    doc["resident"], doc["thresholds"] = facts, thresholds  # the registry's, current
    rows = {str(a["alert_id"]): a for a in doc.get("alerts", [])}
    for a in last_alerts:
        rows[str(a["alert_id"])] = {"audit": [], **rows.get(str(a["alert_id"]), {}), **a}
    doc["alerts"] = sorted(rows.values(), key=lambda a: -float(a.get("opened_at") or 0.0))
    doc["now"] = now
    doc["stale"] = stale_note(down, as_of)
    return doc


def stale_series(cached: tuple[dict[str, Any], float] | None, down: WorkerDown, now: float
                 ) -> dict[str, Any]:
    """A resident's charts while their worker does not answer: the last series this console
    relayed, or none."""
    if cached is not None:
        doc, as_of = dict(cached[0]), cached[1]
    else:
        doc, as_of = {"ts": [], "alerts": [], **{v: [] for v in VITALS}}, None
    doc["now"] = now
    doc["stale"] = stale_note(down, as_of)
    return doc

"""How the district console combines its workers' answers (console.federation)."""

from __future__ import annotations

from config.generate import demo_registry
from config.loader import parse_config
from console.federation import (
    Owners,
    WorkerDown,
    WorkerLink,
    merge_alerts,
    merge_health,
    merge_residents,
    merge_tasks,
    stale_record,
    stale_series,
    unknown_device,
    unmonitored_rows,
)
from console.gateway_state import Recall


def _row(alert_id: str, state: str, sev: int, opened: float) -> dict[str, object]:
    return {"alert_id": alert_id, "state": state, "severity_code": sev, "opened_at": opened}


def test_the_board_sorts_across_workers_as_one_console_does() -> None:
    a = {"alerts": [_row("a1", "acknowledged", 4, 1.0), _row("a2", "open", 2, 5.0)]}
    b = {"alerts": [_row("b1", "escalated", 4, 9.0), _row("b2", "open", 2, 3.0)]}
    got = [r["alert_id"] for r in merge_alerts([a, b], 10.0)["alerts"]]
    # unacknowledged first, then severity, then longest waiting
    assert got == ["b1", "b2", "a2", "a1"]


def test_health_is_the_worst_state_and_a_silent_worker_names_its_towns() -> None:
    ok = {"state": "ok", "problems": []}
    lagging = {"state": "degraded", "problems": [{"code": "ingest_lagging", "level": "degraded",
                                                   "since": None, "detail": "40 s"}]}
    assert merge_health({0: ok, 1: ok}, [], 5.0)["state"] == "ok"
    assert merge_health({0: ok, 1: lagging}, [], 5.0)["state"] == "degraded"
    down = WorkerDown(1, ("t1", "t2"), "ConnectError")
    got = merge_health({0: ok}, [down], 5.0, {"t1": "一镇", "t2": "二镇"})
    assert got["state"] == "degraded"  # the other worker's towns are watched
    assert got["workers"] == 2 and got["workers_answering"] == 1
    problem = got["problems"][0]
    assert problem["code"] == "worker_down" and problem["towns"] == ["一镇", "二镇"]
    assert merge_health({}, [down], 5.0)["state"] == "down"  # nobody answers
    assert merge_health({0: {"state": "down", "problems": []}}, [down], 5.0)["state"] == "down"
    # one problem every worker reports (the broker gone) is listed once, naming them all
    broker = {"code": "broker_disconnected", "level": "down", "detail": "Unspecified error"}
    both = merge_health({0: {"state": "down", "problems": [{**broker, "since": 9.0}]},
                         1: {"state": "down", "problems": [{**broker, "since": 7.0}]},
                         2: lagging}, [], 10.0)
    assert [(p["code"], p["workers"]) for p in both["problems"]] == [
        ("broker_disconnected", [0, 1]), ("ingest_lagging", [2])]
    assert both["problems"][0]["since"] == 7.0


def test_resident_pages_are_cut_from_the_merged_order() -> None:
    config = parse_config(demo_registry(12, seed=3, towns=4))
    towns = sorted({r.town for r in config.residents})
    owners = Owners(config, [WorkerLink(0, tuple(towns[:2]), "http://w0"),
                             WorkerLink(1, tuple(towns[2:]), "http://w1")])

    def row(i: int, status: str, sev: int = 0) -> dict[str, object]:
        return {"resident_id": config.residents[i].id, "status": status, "worst_severity": sev}

    w0 = {"total": 6, "counts": {"alert": 1, "normal": 5},
          "residents": [row(5, "alert", 2), row(0, "normal"), row(1, "normal")]}
    w1 = {"total": 6, "counts": {"alert": 1, "offline": 1, "normal": 4},
          "residents": [row(7, "alert", 4), row(2, "offline"), row(3, "normal")]}
    got = merge_residents([w0, w1], owners, offset=1, limit=3, now=0.0)
    assert got["total"] == 12 and got["counts"]["alert"] == 2 and got["counts"]["offline"] == 1
    # alert (worst first) r7, r5; offline r2; normal in registry order r0, r1, r3
    assert [r["resident_id"] for r in got["residents"]] == [
        config.residents[i].id for i in (5, 2, 0)]
    assert owners.for_resident(config.residents[0].id) == owners.for_town(config.residents[0].town)


def test_tasks_merge_earliest_due_first() -> None:
    a = {"view": "open", "tasks": [{"task_id": "x", "due_at": 5.0}]}
    b = {"view": "open", "tasks": [{"task_id": "y", "due_at": 2.0}, {"task_id": "z", "due_at": 9}]}
    got = merge_tasks([a, b], 1.0)
    assert [t["task_id"] for t in got["tasks"]] == ["y", "x", "z"] and got["view"] == "open"
    assert "note" not in got


def test_tasks_merge_keeps_the_mine_note_with_every_workers_overdue_count() -> None:
    note = {"reason": "above_max_tier", "max_tier": 3}
    a = {"view": "mine", "tasks": [], "note": {**note, "overdue": 4}}
    b = {"view": "mine", "tasks": [], "note": {**note, "overdue": 7}}
    got = merge_tasks([a, b], 1.0)
    assert got["tasks"] == [] and got["note"] == {**note, "overdue": 11}


def test_residents_of_a_silent_worker_are_listed_after_alerts_with_their_last_alerts() -> None:
    config = parse_config(demo_registry(6, seed=3, towns=2))
    owners = Owners(config, [WorkerLink(0, (), "http://w0")])
    ids = [r.id for r in config.residents]
    last = [{"resident_id": ids[2], "severity_code": 3}, {"resident_id": ids[2],
                                                          "severity_code": 4}]
    rows = unmonitored_rows(config, {}, ids[1:3], last)
    assert [(r["resident_id"], r["status"], r["open_alerts"], r["worst_severity"])
            for r in rows] == [(ids[1], "unmonitored", 0, 0), (ids[2], "unmonitored", 2, 4)]
    live = {"total": 2, "counts": {"alert": 1, "offline": 1}, "residents": [
        {"resident_id": ids[4], "status": "offline", "worst_severity": 0},
        {"resident_id": ids[5], "status": "alert", "worst_severity": 2}]}
    got = merge_residents([live, {"residents": rows, "total": 2}], owners, 0, 10, 0.0)
    assert [r["resident_id"] for r in got["residents"]] == [ids[5], ids[2], ids[1], ids[4]]
    assert got["total"] == 4


def test_a_silent_workers_resident_keeps_a_record_marked_stale() -> None:
    down = WorkerDown(1, ("t1", "t2"), "ReadTimeout", since=100.0)
    facts = {"resident_id": "r1", "staff": "s1", "staff_name": "Wang"}
    last = [{**_row("a2", "escalated", 4, 50.0), "resident_id": "r1", "stale": True}]
    # never relayed before: the registry's facts, no device state, the alerts as last seen
    bare = stale_record(facts, {"fall": {}}, None, last, down, 130.0)
    assert bare["resident"] == facts and bare["thresholds"] == {"fall": {}}
    assert bare["device"] == unknown_device()
    assert [(a["alert_id"], a["state"], a["audit"]) for a in bare["alerts"]] == [
        ("a2", "escalated", [])]
    assert bare["stale"] == {"worker": 1, "towns": ["t1", "t2"], "since": 100.0,
                             "reason": "ReadTimeout", "as_of": None}
    assert bare["now"] == 130.0
    # relayed at 90: that record, its alerts updated by what was seen later, newest first
    audit = [{"ts": 40.0, "actor": "x", "action": "opened", "detail": {}}]
    cached = {"now": 90.0, "resident": {"resident_id": "r1", "staff": "old"},
              "device": {"battery": 55.0}, "thresholds": {},
              "alerts": [{**_row("a1", "resolved", 2, 10.0), "audit": []},
                         {**_row("a2", "open", 4, 50.0), "audit": audit}]}
    rec = stale_record(facts, {}, (cached, 90.0), last, down, 130.0)
    assert rec["device"] == {"battery": 55.0} and rec["resident"] == facts
    assert [(a["alert_id"], a["state"]) for a in rec["alerts"]] == [("a2", "escalated"),
                                                                     ("a1", "resolved")]
    assert rec["alerts"][0]["audit"] == audit and rec["alerts"][0]["stale"] is True
    assert rec["stale"]["as_of"] == 90.0 and rec["now"] == 130.0
    assert cached["now"] == 90.0  # the kept record itself is not changed
    charts = stale_series(None, down, 130.0)
    assert charts["ts"] == [] and charts["hr"] == [] and charts["stale"]["as_of"] is None
    kept = stale_series(({"ts": [60.0], "hr": [70.0], "alerts": [], "now": 80.0}, 80.0),
                        down, 130.0)
    assert kept["hr"] == [70.0] and kept["stale"]["as_of"] == 80.0 and kept["now"] == 130.0


def test_the_recall_keeps_the_most_recently_used_answers_within_its_bytes() -> None:
    recall = Recall(max_bytes=30)
    recall.keep("a", b'{"n": 1, "pad": "xxxxx"}', 1.0)  # 24 bytes
    assert recall.get("a") == ({"n": 1, "pad": "xxxxx"}, 1.0)
    recall.keep("b", b'{"n": 2}', 2.0)  # 8 more: over 30, the least recently used goes
    assert recall.get("a") is None and recall.get("b") == ({"n": 2}, 2.0)
    recall.keep("c", b'{"n": 3}', 3.0)
    recall.get("b")  # b used after c: c is the older now
    recall.keep("d", b'{"n": 44444444444}', 4.0)  # 19 bytes: 35 in all, c goes
    assert recall.get("c") is None and recall.get("b") is not None
    recall.keep("b", b'{"n": 5}', 5.0)  # replaced, counted once
    assert recall.size == len(b'{"n": 5}') + len(b'{"n": 44444444444}')
    recall.keep("e", b"x" * 31, 6.0)  # larger than the whole cache: not kept
    assert recall.get("e") is None and recall.size <= 30

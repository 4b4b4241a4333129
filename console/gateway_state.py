"""The district console's link to the workers: the partition, sign-in, asking workers and
relaying their answers, and which worker holds which alert (`console.gateway`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import orjson
from fastapi import HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from carewatch.clock import WallClock
from config.models import ID_PATTERN, Config
from console.auth import Auth
from console.errors import ApiError
from console.federation import DEADLINE_HEADER, Owners, WorkerDown, WorkerLink
from console.gateway_stream import StreamHub
from console.scope import Principal, Scopes
from console.settings import ConsoleSettings
from console.users import UserStore, secret_key
from console.views import Names, alert_row, search_texts
from ingest.devices import DeviceTable
from routines.district import worker_alert_data

log = logging.getLogger(__name__)
ACTION_GRACE_S = 1.0  # beyond an action's deadline: time for the answer to come back
SILENT_WAIT_S = 2.0  # the wait for a worker already found not answering
FORWARD = ("cookie", "authorization", "x-csrf-token", "content-type", "accept-language")
# ids go into the workers' URLs: only the characters ids may have
Id = Annotated[str, PathParam(pattern=ID_PATTERN)]
TaskId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_:.-]{1,200}$")]


class Gateway:
    """State shared by the gateway's routes: the partition, auth, the worker client."""

    def __init__(self, config: Config, workers: list[WorkerLink], data_dir: Path,
                 settings: ConsoleSettings, timeout_s: float, health_timeout_s: float) -> None:
        self.config, self.workers, self.data_dir = config, workers, data_dir
        self.settings, self.timeout_s = settings, timeout_s
        # a hung worker must not hold the banner back: health asks give up sooner
        self.health_timeout_s = health_timeout_s
        self.clock = WallClock()
        self.owners = Owners(config, workers)
        self.devices = DeviceTable.from_config(config)
        self.scopes = Scopes(config, self.devices)
        self.names = Names(config)
        self.search_text = search_texts(config, self.names)  # as a worker's console searches
        users = UserStore(settings.users_file or data_dir / "users.json", config)
        self.auth = Auth(users, secret_key(settings.secret_file or data_dir / "console.secret"),
                         settings.session_ttl_s, settings.auth_clock,
                         settings.login_max_failures, settings.login_lockout_s,
                         settings.cookie_secure)
        self.alert_owner: dict[str, int] = {}  # alert id -> worker, learnt from answers
        self.down_since: dict[int, float] = {}  # worker -> first failed ask, while failing
        # each worker's open alerts as last seen (board answers, the live stream): shown,
        # marked stale, while that worker does not answer (its alerts are still open)
        self.known: dict[int, dict[str, dict[str, Any]]] = {w.index: {} for w in workers}
        self.heard: set[int] = set()  # workers that have answered this gateway
        self.recalled_at: dict[int, float] = {}  # worker -> last read of its store
        # the last record and charts relayed per resident: shown, marked stale, while
        # the resident's worker does not answer
        self.recall = Recall(max_bytes=64 << 20)
        self.client: httpx.AsyncClient | None = None
        self.hub: StreamHub | None = None

    # ---- asking workers -----------------------------------------------------------------
    async def ask(self, w: WorkerLink, request: Request, method: str, path: str,
                  params: dict[str, Any] | None = None, body: bytes | None = None,
                  timeout_s: float | None = None) -> httpx.Response | WorkerDown:
        assert self.client is not None
        headers = {k: v for k in FORWARD if (v := request.headers.get(k)) is not None}
        timeout = timeout_s or self.timeout_s
        if method != "GET":
            # the worker refuses it after the wait (`console.app`): an action reported here
            # as not done stays undone; the answer of one done just in time still arrives
            headers[DEADLINE_HEADER] = f"{time.time() + timeout:.3f}"
            timeout += ACTION_GRACE_S
        try:
            return await self.client.request(method, w.url + path, params=params,
                                             content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            return WorkerDown(w.index, w.towns, f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def ask_each(self, request: Request, path: str,
                       params: dict[str, Any] | None = None, timeout_s: float | None = None
                       ) -> tuple[dict[int, dict[str, Any]], list[WorkerDown]]:
        """Every worker's JSON answer to GET `path`, by worker; a 4xx is the request's own
        fault and is answered as is; workers that fail otherwise (or answer later than
        `timeout_s`) are listed as down."""
        got = await asyncio.gather(*(self.ask(w, request, "GET", path, params,
                                              timeout_s=self.timeout_for(w, timeout_s))
                                     for w in self.workers))
        answers: dict[int, dict[str, Any]] = {}
        down = []
        for w, r in zip(self.workers, got, strict=True):
            d = self.down(w, r)
            if d is not None:
                down.append(d)
                continue
            assert not isinstance(r, WorkerDown)
            if r.status_code != 200:  # a 4xx: the request's own fault
                raise _refusal(r)
            answers[w.index] = r.json()
        return answers, down

    async def ask_all(self, request: Request, path: str, params: dict[str, Any] | None = None,
                      timeout_s: float | None = None
                      ) -> tuple[list[dict[str, Any]], list[WorkerDown]]:
        """`ask_each`'s answers as a list, in worker order."""
        answers, down = await self.ask_each(request, path, params, timeout_s)
        return list(answers.values()), down

    def learn(self, rows: list[dict[str, Any]], whole: int | None = None) -> None:
        """Remember which worker holds each alert (for acting on it by id) and the open
        ones' last rows; `whole`: these rows are all of that worker's open alerts."""
        if whole is not None:
            self.known[whole] = {}
        for row in rows:
            k = self.owners.of_resident.get(str(row.get("resident_id")))
            if k is None or "alert_id" not in row:
                continue
            alert_id = str(row["alert_id"])
            self.alert_owner[alert_id] = k
            if row.get("state") == "resolved":
                self.known[k].pop(alert_id, None)
            else:
                self.known[k][alert_id] = row
        if len(self.alert_owner) > 200_000:  # bounded: the oldest half goes
            for key in list(self.alert_owner)[:100_000]:
                del self.alert_owner[key]

    async def owner_of_alert(self, request: Request, alert_id: str) -> WorkerLink:
        k = self.alert_owner.get(alert_id)
        if k is not None:
            return self.owners.worker(k)
        # not seen yet (e.g. a page older than this gateway): ask every worker; only the
        # owner has it in scope (and only the owner audits the look)
        got = await asyncio.gather(*(self.ask(w, request, "GET", f"/api/alerts/{alert_id}")
                                     for w in self.workers))
        for r in got:
            if not isinstance(r, WorkerDown) and r.status_code == 200:
                self.learn([r.json()["alert"]])
                if alert_id in self.alert_owner:
                    return self.owners.worker(self.alert_owner[alert_id])
        if any(isinstance(r, WorkerDown) for r in got):
            raise ApiError(503, "worker_down", f"alert {alert_id} not found on the workers "
                           "answering; a worker is down")
        raise HTTPException(404, f"no alert {alert_id}")

    async def recall_open_alerts(self, down: list[WorkerDown]) -> None:
        """Open alerts as last seen for silent workers this gateway has never heard from
        (say the supervisor restarted while one was down), read from their stores, so that
        those alerts stay on the board, stale, instead of vanishing. At most every 10 s."""
        now = self.clock.now()
        for k in [d.index for d in down if d.index not in self.heard
                  and now - self.recalled_at.get(d.index, -np.inf) >= 10.0]:
            self.recalled_at[k] = now
            try:
                rows = await asyncio.to_thread(self._stored_open_alerts, k, now)
            except Exception:  # an unreadable store: nothing to add; the banner still says
                log.exception("could not read worker %d's open alerts from its store", k)
                continue
            self.learn(rows)

    def _stored_open_alerts(self, k: int, now: float) -> list[dict[str, Any]]:
        data = worker_alert_data(self.config, self.data_dir, k)
        if data is None:
            return []
        return [alert_row(a, self.names, now) for a in data.unresolved_at(now)
                if self.owners.of_resident.get(a.resident_id) == k]

    def last_known(self, k: int, p: Principal, include_acknowledged: bool
                   ) -> list[dict[str, Any]]:
        """Worker `k`'s open alerts in `p`'s scope as last seen, each marked stale."""
        return [{**row, "stale": True} for row in self.known[k].values()
                if self.scopes.allows_resident(p, str(row["resident_id"]))
                and (include_acknowledged or row.get("state") in ("open", "escalated"))]

    def residents_of(self, workers: list[int], p: Principal, town: str | None = None,
                     q: str | None = None) -> list[str]:
        """Ids of the residents of `workers`' towns in `p`'s scope (registry order), in
        `town` and matching the search `q` when given (as a worker's list filters)."""
        if not workers:
            return []
        towns = {t for k in workers for t in self.owners.worker(k).towns}
        mask = self.scopes.mask(p) & np.isin(self.scopes.res_town, list(towns))
        if town is not None:
            mask = mask & (self.scopes.res_town == town)
        if q and q.strip():
            mask = mask & (np.char.find(self.search_text, q.strip().lower()) >= 0)
        ids = self.devices.resident_ids
        return [ids[i] for i in np.flatnonzero(mask).tolist()]

    def down(self, w: WorkerLink, r: httpx.Response | WorkerDown) -> WorkerDown | None:
        """`r` as a worker that does not answer (a failed request or a 5xx), with since when;
        None for an answer."""
        if not isinstance(r, WorkerDown):
            if 200 <= r.status_code < 300 or 400 <= r.status_code < 500:
                self.down_since.pop(w.index, None)
                self.heard.add(w.index)
                return None
            r = WorkerDown(w.index, w.towns, f"HTTP {r.status_code}: {_detail(r)}")
        # since when it has been silent (as this gateway saw it)
        return dataclasses.replace(r, since=self.down_since.setdefault(r.index,
                                                                        self.clock.now()))

    def timeout_for(self, w: WorkerLink, timeout_s: float | None = None) -> float:
        """How long to wait for `w` (`timeout_s` or the default): a worker already found
        silent gets a shorter wait, so that one hung worker does not slow every page."""
        wait = timeout_s or self.timeout_s
        return min(wait, SILENT_WAIT_S) if w.index in self.down_since else wait

    def check_scope(self, p: Principal, resident_id: str) -> None:
        """403 unless `p` may see the resident (as a worker's console would answer)."""
        if not self.scopes.allows_resident(p, resident_id):
            raise HTTPException(403, "this resident is outside your scope")

    def resident_owner(self, resident_id: str) -> WorkerLink:
        w = self.owners.for_resident(resident_id)
        if w is None:
            raise HTTPException(404, f"no resident {resident_id}")
        return w


class Recall:
    """Answers kept by key, the least recently used dropped beyond `max_bytes` in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[Any, tuple[bytes, float]] = OrderedDict()

    def keep(self, key: Any, content: bytes, at: float) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old[0])
        if len(content) > self.max_bytes:
            return
        self._items[key] = (content, at)
        self.size += len(content)
        while self.size > self.max_bytes:
            _, (dropped, _) = self._items.popitem(last=False)
            self.size -= len(dropped)

    def get(self, key: Any) -> tuple[dict[str, Any], float] | None:
        """The answer kept under `key` (parsed) and when it was kept, or None."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return orjson.loads(item[0]), item[1]


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", r.text))
    except ValueError:
        return r.text


def _refusal(r: httpx.Response) -> HTTPException:
    """A worker's 4xx answer as the gateway's error, with the worker's code."""
    try:
        code = r.json().get("code")
    except (ValueError, AttributeError):
        code = None
    if isinstance(code, str):
        return ApiError(r.status_code, code, _detail(r))
    return HTTPException(r.status_code, _detail(r))


def relay(r: httpx.Response | WorkerDown, cookies: bool = False) -> Response:
    """A worker's answer as the gateway's (503 naming the worker when it did not answer)."""
    if isinstance(r, WorkerDown):  # an action sent to it was not done (its deadline)
        doc = {"detail": f"worker {r.index} not answering ({r.reason}): nothing was done",
               "code": "worker_down", "worker": r.index}
        return Response(orjson.dumps(doc), status_code=503, media_type="application/json")
    out = Response(r.content, status_code=r.status_code,
                   media_type=r.headers.get("content-type", "application/json"))
    if cookies:
        for value in r.headers.get_list("set-cookie"):
            out.headers.append("set-cookie", value)
    return out



/* Alert board: open alerts, most urgent first, pushed live over server-sent events. */
"use strict";
(() => {
  const alerts = new Map(); // alert_id -> row
  let renderQueued = false;
  let soundOn = localStorage.getItem("cw.sound") !== "off";
  let audio = null;
  let ready = false;
  const list = document.getElementById("alerts");
  // Tier 4 re-notifies when its deadline passes and moves the deadline on by the
  // acknowledgement period, but that is a notice, not an event: nothing is pushed, and the
  // rows do not carry the period (deadline - tier_reached_at is an unknown multiple of it).
  // So a passed tier-4 deadline reads "re-notifying" rather than "0:00", and the board
  // re-reads for the new deadline once the engine has had time to move it.
  const RENOTIFYING = { zh: "正在再次通知", en: "re-notifying" };
  const RENOTIFY_READ_AFTER_S = 3; // the engine acts on the next tick (1 s) after a deadline
  const RENOTIFY_READ_GAP_S = 10; // and such re-reads never come faster than every 10 s
  let renotifyReadAt = 0; // server time of the last such re-read

  const unacked = (a) => a.state === "open" || a.state === "escalated";
  const key = (a) => [unacked(a) ? 0 : 1, -a.severity_code, a.opened_at, a.alert_id];
  function cmp(x, y) {
    const a = key(x), b = key(y);
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
  }

  function countdownText(tier, deadline, now) {
    if (tier < 4) return `${CW.t("next_escalation")} ${CW.fmtDur(deadline - now)}`;
    if (deadline <= now) return RENOTIFYING[CW.lang] || RENOTIFYING.en;
    return `${CW.t("renotify")} ${CW.fmtDur(deadline - now)}`;
  }

  function countdown(a) {
    // a stale card's worker is not answering: its timers are not running as shown
    if (a.stale) return { text: CW.t("timer_unknown"), running: 0 };
    if (a.deadline === null || a.deadline === undefined) return { text: CW.t("stopped"), running: 0 };
    return { text: countdownText(a.tier, a.deadline, CW.now()), running: 1 };
  }

  function card(a) {
    const cd = countdown(a);
    const text = CW.lang === "zh" ? a.message_zh : a.message;
    const who = a.dispatched_by ? `${CW.t("dispatched_by")} ${a.dispatched_by}`
      : a.acked_by ? `${CW.t("acked_by")} ${a.acked_by}` : "";
    const canAck = unacked(a);
    const canDispatch = a.state !== "dispatched";
    return `<li class="alert sev-${CW.esc(a.severity)} st-${CW.esc(a.state)}" data-alert-id="${CW.esc(a.alert_id)}"
        data-resident-id="${CW.esc(a.resident_id)}"${a.stale ? ' data-stale="1"' : ""} data-state="${CW.esc(a.state)}" data-severity="${CW.esc(a.severity)}">
      <div class="sev">${CW.esc(CW.t("sev_" + a.severity))}</div>
      <div class="main">
        <div class="line1">
          <a class="who" href="/residents/${encodeURIComponent(a.resident_id)}">${CW.esc(a.resident_name)}</a>
          <span class="town">${CW.esc(a.town_name)}</span>
          <span class="kind">${CW.esc(CW.t("k_" + a.kind))}</span>
          <span class="state">${CW.esc(CW.t("state_" + a.state))}</span>
          <span class="tier">T${a.tier} ${CW.esc(CW.t("tier_" + a.tier))}</span>
          ${a.stale ? `<span class="stale">${CW.esc(CW.t("stale"))}</span>` : ""}
        </div>
        <div class="evidence">${CW.esc(text)}</div>
        <div class="line3">
          <span class="waiting">${CW.esc(CW.t("waiting"))} <b data-since="${a.opened_at}">${CW.fmtDur(CW.now() - a.opened_at)}</b></span>
          <span class="countdown" data-running="${cd.running}" data-deadline="${a.deadline ?? ""}" data-tier="${a.tier}">${CW.esc(cd.text)}</span>
          <span class="by">${CW.esc(who)}</span>
        </div>
        <form class="resolve-form" hidden>
          <textarea name="note" rows="2" required maxlength="4000" data-i18n-ph="note" placeholder="${CW.esc(CW.t("note"))}"></textarea>
          <div class="row"><button type="submit" class="primary" data-i18n="submit">${CW.esc(CW.t("submit"))}</button>
          <button type="button" class="cancel" data-i18n="cancel">${CW.esc(CW.t("cancel"))}</button>
          <span class="err" role="alert"></span></div>
        </form>
      </div>
      <div class="actions">
        ${canAck ? `<button type="button" class="primary act" data-act="ack">${CW.esc(CW.t("ack"))}</button>` : ""}
        ${canDispatch ? `<button type="button" class="act" data-act="dispatch">${CW.esc(CW.t("dispatch"))}</button>` : ""}
        <button type="button" class="act" data-act="resolve">${CW.esc(CW.t("resolve"))}</button>
      </div>
    </li>`;
  }

  const PARTS = [".sev", ".line1", ".evidence", ".line3", ".actions"]; // all but the form

  function render() {
    renderQueued = false;
    const t0 = performance.now();
    const rows = [...alerts.values()].sort(cmp);
    // in place, by alert id: open resolve forms survive a push or a re-read (CW.renderCards)
    CW.renderCards(list, rows, { idOf: (a) => a.alert_id, key: "alertId", card, parts: PARTS });
    document.getElementById("empty").hidden = rows.length > 0;
    const un = rows.filter(unacked).length;
    document.getElementById("counts").textContent =
      `${rows.length} ${CW.t("open_count")} · ${un} ${CW.t("unacked_count")}`;
    badge();
    document.body.dataset.lastRenderMs = (performance.now() - t0).toFixed(1);
  }
  const queue = () => { if (!renderQueued) { renderQueued = true; requestAnimationFrame(render); } };

  function badge() {
    const crit = [...alerts.values()].filter((a) => unacked(a) && a.severity === "critical").length;
    document.title = `${crit ? `(${crit}) ` : ""}${CW.t("nav_board")} · CareWatch`;
  }

  function tick() { // once a second: countdowns and waiting times; a re-read only as below
    const n = CW.now();
    let renotified = 0; // the latest tier-4 deadline passed, if any
    list.querySelectorAll('.countdown[data-running="1"]').forEach((el) => {
      const tier = Number(el.dataset.tier), deadline = Number(el.dataset.deadline);
      el.textContent = countdownText(tier, deadline, n);
      if (tier >= 4 && deadline <= n) renotified = Math.max(renotified, deadline);
    });
    list.querySelectorAll("[data-since]").forEach((el) => {
      el.textContent = CW.fmtDur(n - Number(el.dataset.since));
    });
    // re-read for the deadline a re-notification moved (once per passed deadline: a
    // re-read that still shows it, e.g. while the engine is held up, is not repeated)
    const readAt = renotified + RENOTIFY_READ_AFTER_S;
    if (renotified && readAt <= n && readAt > renotifyReadAt
        && n - renotifyReadAt >= RENOTIFY_READ_GAP_S) {
      renotifyReadAt = n;
      load().catch(() => {});
    }
  }

  function beep() {
    if (!soundOn) return;
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      [0, 0.35, 0.7].forEach((at) => {
        const o = audio.createOscillator(), g = audio.createGain();
        o.frequency.value = 880; o.connect(g); g.connect(audio.destination);
        g.gain.setValueAtTime(0.25, audio.currentTime + at);
        g.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + at + 0.3);
        o.start(audio.currentTime + at); o.stop(audio.currentTime + at + 0.3);
      });
    } catch (e) { /* no audio device: the title badge still shows */ }
  }

  function paintSound() {
    document.getElementById("sound").textContent = CW.t(soundOn ? "sound_on" : "sound_off");
  }

  // Re-reads of the board race with pushed events: a re-read's answer may describe the
  // board before an event that arrived while it was on its way (a fall pushed during a
  // resync), and re-reads started together may answer out of order. Only the latest
  // re-read's answer is applied, and the events that arrived while it was on its way are
  // applied again on top of it (in order; never one older than the row it would replace).
  let loadsStarted = 0, loadsSettled = 0;
  let pushedDuringLoad = [];

  async function load() {
    const gen = ++loadsStarted;
    const f0 = performance.now();
    let data;
    try {
      data = await CW.api("/api/alerts");
    } catch (e) {
      if (gen === loadsStarted) { loadsSettled = gen; pushedDuringLoad = []; }
      throw e;
    }
    document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
    if (gen !== loadsStarted) return; // a newer re-read is on its way: its answer counts
    document.body.dataset.fetchMs = (performance.now() - f0).toFixed(1);
    CW.syncClock(data.now);
    alerts.clear();
    data.alerts.forEach((a) => alerts.set(a.alert_id, a));
    const replay = pushedDuringLoad;
    pushedDuringLoad = [];
    loadsSettled = gen;
    replay.forEach(applyIfNotOlder);
    ready = true;
    queue();
  }

  function apply(row) {
    if (row.state === "resolved") alerts.delete(row.alert_id);
    else alerts.set(row.alert_id, row);
  }

  function applyIfNotOlder(row) {
    const have = alerts.get(row.alert_id);
    if (!have || !(row.updated_at < have.updated_at)) apply(row);
  }

  function onEvent(row) {
    CW.syncClock(row.now);
    const before = alerts.get(row.alert_id);
    if (loadsStarted > loadsSettled) pushedDuringLoad.push(row);
    apply(row);
    // a critical alert that needs someone: a new one, or an unacknowledged one whose
    // severity has just risen to critical (its timer restarted at the shorter time)
    if (ready && unacked(row) && row.severity === "critical" && before?.severity !== "critical") {
      beep();
      document.body.dataset.newCritical = String(Number(document.body.dataset.newCritical || 0) + 1);
    }
    queue();
  }

  function connect() {
    const live = document.getElementById("live");
    const es = new EventSource("/api/stream");
    es.addEventListener("open", () => {
      live.dataset.state = "open"; live.textContent = CW.t("live");
      load().catch(() => {}); // catch up on anything missed while disconnected
    });
    es.addEventListener("alert", (ev) => onEvent(JSON.parse(ev.data)));
    es.addEventListener("resync", () => load().catch(() => {}));
    es.addEventListener("error", () => { live.dataset.state = "retry"; live.textContent = CW.t("reconnecting"); });
    window.addEventListener("cw-lang", () => {
      if (live.dataset.state) live.textContent = CW.t(live.dataset.state === "open" ? "live" : "reconnecting");
    });
  }

  async function act(li, action, note) {
    const id = li.dataset.alertId;
    const body = action === "resolve" ? { note } : undefined;
    const res = await CW.api(`/api/alerts/${encodeURIComponent(id)}/${action}`, { method: "POST", body });
    applyIfNotOlder(res.alert); // an escalation pushed meanwhile is newer than this answer
    queue();
  }

  list.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    const li = b.closest("li");
    const form = li.querySelector(".resolve-form");
    if (b.classList.contains("cancel")) { form.hidden = true; return; }
    if (!b.dataset.act) return;
    if (b.dataset.act === "resolve") { form.hidden = false; form.note.focus(); return; }
    b.disabled = true;
    try {
      await act(li, b.dataset.act);
    } catch (e) { // e.g. someone else acknowledged it first: say so, show the current board
      window.alert(e.message);
      b.disabled = false;
      load().catch(() => {});
    }
  });
  list.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target, li = form.closest("li");
    const note = form.note.value.trim();
    const err = form.querySelector(".err");
    if (!note) { err.textContent = CW.t("note_required"); return; }
    try { await act(li, "resolve", note); } catch (e) { err.textContent = e.message; }
  });
  document.getElementById("sound").addEventListener("click", () => {
    soundOn = !soundOn;
    localStorage.setItem("cw.sound", soundOn ? "on" : "off");
    paintSound();
    if (soundOn) beep();
  });
  window.addEventListener("cw-lang", () => { paintSound(); queue(); });

  CW.init("board").then(async () => {
    paintSound();
    const t0 = performance.now();
    await load();
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    document.body.dataset.renderMs = String(Math.round(performance.now() - t0));
    document.body.dataset.ready = "1";
    connect();
    setInterval(tick, 1000);
    setInterval(() => load().catch(() => {}), 60000); // safety net only; pushes do the work
  });
})();

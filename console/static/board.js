/* Alert board: open alerts, most urgent first, pushed live over server-sent events. */
"use strict";
(() => {
  const alerts = new Map(); // alert_id -> row
  let renderQueued = false;
  let soundOn = localStorage.getItem("cw.sound") !== "off";
  let audio = null;
  let ready = false;
  const list = document.getElementById("alerts");

  const unacked = (a) => a.state === "open" || a.state === "escalated";
  const key = (a) => [unacked(a) ? 0 : 1, -a.severity_code, a.opened_at, a.alert_id];
  function cmp(x, y) {
    const a = key(x), b = key(y);
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
  }

  function countdown(a) {
    // a stale card's worker is not answering: its timers are not running as shown
    if (a.stale) return { text: CW.t("timer_unknown"), running: 0 };
    if (a.deadline === null || a.deadline === undefined) return { text: CW.t("stopped"), running: 0 };
    const label = a.tier >= 4 ? CW.t("renotify") : CW.t("next_escalation");
    return { text: `${label} ${CW.fmtDur(a.deadline - CW.now())}`, running: 1 };
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
          <textarea name="note" rows="2" required maxlength="4000" placeholder="${CW.esc(CW.t("note"))}"></textarea>
          <div class="row"><button type="submit" class="primary">${CW.esc(CW.t("submit"))}</button>
          <button type="button" class="cancel">${CW.esc(CW.t("cancel"))}</button>
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

  function render() {
    renderQueued = false;
    const t0 = performance.now();
    // keep an open resolve form (and its text) across re-renders
    const openForm = list.querySelector(".resolve-form:not([hidden])");
    const keep = openForm ? { id: openForm.closest("li").dataset.alertId, note: openForm.note.value } : null;
    const rows = [...alerts.values()].sort(cmp);
    list.innerHTML = rows.map(card).join("");
    document.getElementById("empty").hidden = rows.length > 0;
    const un = rows.filter(unacked).length;
    document.getElementById("counts").textContent =
      `${rows.length} ${CW.t("open_count")} · ${un} ${CW.t("unacked_count")}`;
    if (keep) {
      const li = list.querySelector(`li[data-alert-id="${CSS.escape(keep.id)}"]`);
      if (li) { const f = li.querySelector(".resolve-form"); f.hidden = false; f.note.value = keep.note; }
    }
    badge();
    document.body.dataset.lastRenderMs = (performance.now() - t0).toFixed(1);
  }
  const queue = () => { if (!renderQueued) { renderQueued = true; requestAnimationFrame(render); } };

  function badge() {
    const crit = [...alerts.values()].filter((a) => unacked(a) && a.severity === "critical").length;
    document.title = `${crit ? `(${crit}) ` : ""}${CW.t("nav_board")} · CareWatch`;
  }

  function tick() { // once a second: countdowns and waiting times only, no fetch
    const n = CW.now();
    list.querySelectorAll('.countdown[data-running="1"]').forEach((el) => {
      const label = Number(el.dataset.tier) >= 4 ? CW.t("renotify") : CW.t("next_escalation");
      el.textContent = `${label} ${CW.fmtDur(Number(el.dataset.deadline) - n)}`;
    });
    list.querySelectorAll("[data-since]").forEach((el) => {
      el.textContent = CW.fmtDur(n - Number(el.dataset.since));
    });
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
    const isNew = !alerts.has(row.alert_id);
    if (loadsStarted > loadsSettled) pushedDuringLoad.push(row);
    apply(row);
    if (isNew && row.state !== "resolved" && row.severity === "critical" && ready) {
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

/* Residents in scope, a status at a glance; filter by town and status, search. */
"use strict";
(() => {
  // "unmonitored" comes only from the district console: the resident's worker is not answering
  const STATUSES = ["alert", "unmonitored", "offline", "not_worn", "low_battery", "normal"];
  let rows = [];
  let counts = {};
  let status = "";
  const tbody = document.getElementById("rows");
  const q = document.getElementById("q");
  const town = document.getElementById("town");
  const MAX_ROWS = 3000; // the DOM stays light; a search or filter narrows further

  const num = (v, d = 0) => (v === null || v === undefined ? "—" : Number(v).toFixed(d));

  function chips() {
    const el = document.getElementById("status");
    const all = Object.values(counts).reduce((a, b) => a + b, 0);
    const shownStatuses = STATUSES.filter((s) => s !== "unmonitored" || counts[s]);
    el.innerHTML = [["", CW.t("all"), all], ...shownStatuses.map((s) => [s, CW.t("st_" + s), counts[s] || 0])]
      .map(([s, label, n]) => `<button type="button" class="chip st-${s || "all"} ${s === status ? "on" : ""}"
        data-status="${s}">${CW.esc(label)} <b>${n}</b></button>`).join("");
  }

  function render() {
    const t0 = performance.now();
    const needle = q.value.trim().toLowerCase();
    const tw = town.value;
    const shown = rows.filter((r) => (!status || r.status === status) && (!tw || r.town_id === tw) &&
      (!needle || `${r.resident_id} ${r.name} ${r.device_id} ${r.town_name}`.toLowerCase().includes(needle)));
    tbody.innerHTML = shown.slice(0, MAX_ROWS).map((r) => `<div class="rrow st-${r.status}" role="row" data-resident-id="${CW.esc(r.resident_id)}">
      <span role="cell"><a href="/residents/${encodeURIComponent(r.resident_id)}">${CW.esc(r.name)}</a>
        <small>${CW.esc(r.resident_id)}</small>${r.muted ? `<span class="muted-icon" title="${CW.esc(CW.t("muted"))}" aria-label="${CW.esc(CW.t("muted"))}">🔕</span>` : ""}</span>
      <span role="cell">${CW.esc(r.town_name)}</span>
      <span role="cell"><span class="status st-${r.status}">${CW.esc(CW.t("st_" + r.status))}</span></span>
      <span role="cell">${r.open_alerts || ""}</span>
      <span role="cell" class="wide">${num(r.hr)}</span><span role="cell" class="wide">${num(r.spo2)}</span>
      <span role="cell" class="wide">${r.battery === null ? "—" : num(r.battery) + "%"}</span>
      <span role="cell" class="wide">${r.status === "unmonitored" ? "—" : CW.esc(CW.ago(r.last_seen))}</span></div>`).join("");
    document.getElementById("shown").textContent =
      `${CW.t("showing")} ${Math.min(shown.length, MAX_ROWS)} / ${shown.length} (${CW.t("of")} ${rows.length})`;
    chips();
    document.body.dataset.lastRenderMs = (performance.now() - t0).toFixed(1);
  }

  async function load() {
    const f0 = performance.now();
    const data = await CW.api("/api/residents?limit=20000");
    document.body.dataset.fetchMs = (performance.now() - f0).toFixed(1);
    CW.syncClock(data.now);
    rows = data.residents;
    counts = data.counts;
    render();
  }

  let timer = null;
  q.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(render, 120); });
  town.addEventListener("change", render);
  document.getElementById("status").addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    status = b.dataset.status;
    render();
  });
  window.addEventListener("cw-lang", render);

  CW.init("residents").then(async (me) => {
    me.towns.forEach((t) => {
      const o = document.createElement("option");
      o.value = t.id; o.textContent = t.name;
      town.appendChild(o);
    });
    const t0 = performance.now();
    await load();
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    document.body.dataset.renderMs = String(Math.round(performance.now() - t0));
    document.body.dataset.ready = "1";
    setInterval(() => load().catch(() => {}), 30000); // statuses drift slowly; 30 s is plenty
  });
})();

/* One resident: record, silences (with an end button), device state, 24 h charts with alert
   markers, alert history + audit. */
"use strict";
(() => {
  const rid = decodeURIComponent(location.pathname.split("/").pop());
  const SEV_COLOR = { critical: "#ff4d4f", high: "#ff9f43", medium: "#ffd166", low: "#7aa2f7" };
  const CHARTS = [
    { id: "hr", label: "v_hr", series: [["hr", "#ff6b81"]] },
    { id: "spo2", label: "v_spo2", series: [["spo2", "#4dabf7"]] },
    { id: "rr", label: "v_rr", series: [["rr", "#63e6be"]] },
    { id: "temp_c", label: "v_temp_c", series: [["temp_c", "#ffa94d"]] },
    { id: "bp", label: "v_bp", series: [["sbp", "#e599f7"], ["dbp", "#b197fc"]] },
    { id: "activity", label: "v_activity", series: [["activity", "#adb5bd"]] },
  ];
  let detail = null, series = null, hours = 24;
  const plots = [];

  const num = (v, d = 0) => (v === null || v === undefined ? "—" : Number(v).toFixed(d));

  function markers(u) { // vertical lines at alert openings, coloured by severity
    const { ctx, bbox } = u;
    ctx.save();
    series.alerts.forEach((m) => {
      const x = Math.round(u.valToPos(m.ts, "x", true));
      if (x < bbox.left || x > bbox.left + bbox.width) return;
      ctx.strokeStyle = SEV_COLOR[m.severity] || "#fff";
      ctx.lineWidth = 2 * devicePixelRatio;
      ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
      ctx.beginPath(); ctx.moveTo(x, bbox.top); ctx.lineTo(x, bbox.top + bbox.height); ctx.stroke();
    });
    ctx.restore();
  }

  function drawCharts() {
    const host = document.getElementById("charts");
    plots.splice(0).forEach((p) => p.destroy());
    host.innerHTML = "";
    if (!series.ts.length) { // e.g. the resident's worker is not answering and none was seen
      host.innerHTML = `<p class="empty">${CW.esc(CW.t("no_series"))}</p>`;
      return;
    }
    // lay out every box first: a lone box would span the whole grid and size its chart so
    const boxes = CHARTS.map((c) => {
      const box = document.createElement("div");
      box.className = "chart";
      box.dataset.chart = c.id;
      box.innerHTML = `<h3>${CW.esc(CW.t(c.label))}</h3>`;
      host.appendChild(box);
      return box;
    });
    CHARTS.forEach((c, i) => {
      const box = boxes[i];
      const opts = {
        width: Math.max(260, box.clientWidth - 14), height: 170,
        cursor: { drag: { x: true, y: false } },
        scales: { x: { time: true } },
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), CW.me.timezone),
        axes: [ // times in the UI's language (uPlot's own labels are English, 12-hour)
          { stroke: "#9aa4b2", grid: { stroke: "#252c36" }, ticks: { stroke: "#252c36" },
            values: CWChartTime.axisValues },
          { stroke: "#9aa4b2", grid: { stroke: "#252c36" }, ticks: { stroke: "#252c36" }, size: 50 },
        ],
        series: [{ label: CW.t("chart_time"), value: CWChartTime.legendValue }, ...c.series.map(([k, color]) => ({
          label: CW.t(`s_${k}`), stroke: color, width: 1.5, spanGaps: false, points: { show: false },
        }))],
        hooks: { draw: [markers] },
        legend: { show: true },
      };
      const data = [series.ts, ...c.series.map(([k]) => series[k])];
      // sparse data (a device just heard from) would draw nothing as lines alone
      const have = c.series.reduce((n, [k]) => n + series[k].filter((v) => v !== null).length, 0);
      opts.series.slice(1).forEach((s) => { s.points = { show: have < 300, size: 4 }; });
      plots.push(new uPlot(opts, data, box));
    });
    zoom();
  }

  function zoom() { // the window buttons: the last 1, 6 or 24 hours up to now
    if (!series.ts.length) return;
    const max = series.ts[series.ts.length - 1] + 60;
    plots.forEach((p) => p.setScale("x", { min: max - hours * 3600, max }));
  }
  document.getElementById("range").addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b || !series) return;
    hours = Number(b.dataset.hours);
    document.querySelectorAll("#range .chip").forEach((c) => c.classList.toggle("on", c === b));
    zoom();
  });

  function about() {
    const r = detail.resident;
    document.getElementById("name").textContent = `${r.name}`;
    document.getElementById("meta").textContent = `${r.resident_id} · ${r.town_name}`;
    document.title = `${r.name} · CareWatch`;
    const conds = r.conditions.length ? r.conditions.map((c) => `<span class="chip">${CW.esc(c)}</span>`).join(" ")
      : CW.esc(CW.t("none"));
    document.getElementById("about").innerHTML = `<dl>
      <dt>${CW.esc(CW.t("town"))}</dt><dd>${CW.esc(r.town_name)}</dd>
      <dt>${CW.esc(CW.t("institution"))}</dt><dd>${CW.esc(r.institution_name || r.institution || "—")}</dd>
      <dt>${CW.esc(CW.t("carer"))}</dt><dd>${CW.esc(r.staff_name || r.staff || "—")}</dd>
      <dt>${CW.esc(CW.t("conditions"))}</dt><dd>${conds}</dd></dl>`;
    const d = detail.device;
    const online = d.online === 1 ? "online" : d.online === 0 ? "offline_s" : "unknown";
    const worn = d.worn === 1 ? "worn" : d.worn === 0 ? "not_worn_s" : "unknown";
    const v = d.latest;
    document.getElementById("device").innerHTML = `<dl>
      <dt>${CW.esc(CW.t("device"))}</dt><dd>${CW.esc(r.device_id)} · ${CW.esc(CW.t(online))} · ${CW.esc(CW.t(worn))}</dd>
      <dt>${CW.esc(CW.t("battery"))}</dt><dd>${d.battery === null ? "—" : num(d.battery) + "%"}</dd>
      <dt>${CW.esc(CW.t("last_seen"))}</dt><dd>${CW.esc(d.last_seen === null && detail.stale ? CW.t("unknown") : CW.fmtTime(d.last_seen, true))}</dd>
      <dt>${CW.esc(CW.t("col_hr"))} / ${CW.esc(CW.t("col_spo2"))}</dt><dd class="big">${num(v.hr.value)} / ${num(v.spo2.value)}%</dd>
      <dt>RR / T</dt><dd>${num(v.rr.value)} / ${num(v.temp_c.value, 1)} °C</dd>
      <dt>BP</dt><dd>${num(v.sbp.value)}/${num(v.dbp.value)} mmHg</dd></dl>`;
    document.getElementById("thresholds").innerHTML = Object.entries(detail.thresholds).map(([k, p]) =>
      `<div class="th"><b>${CW.esc(CW.t("k_" + k))}</b> <code>${CW.esc(JSON.stringify(p))}</code></div>`).join("");
  }

  function stale() { // the resident's worker is not answering (district console only)
    const el = document.getElementById("stale");
    const s = detail.stale;
    el.hidden = !s;
    if (!s) return;
    const zh = CW.lang === "zh";
    let text = CW.t("stale_record");
    if (s.since !== null && s.since !== undefined) {
      const dur = CW.fmtDur(CW.now() - s.since);
      text += zh ? `（自 ${CW.fmtTime(s.since)} 起，已持续 ${dur}）` : ` (since ${CW.fmtTime(s.since)}, for ${dur})`;
    }
    text += zh ? "。" : ". ";
    text += s.as_of === null || s.as_of === undefined ? CW.t("stale_no_data")
      : `${CW.t("stale_as_of")} ${CW.fmtTime(s.as_of, true)}`;
    el.textContent = text + (zh ? "。" : ".");
    el.dataset.worker = String(s.worker);
  }

  function untilText(ts) { // HH:MM in the deployment's time, with the date if not today
    const locale = CW.lang === "zh" ? "zh-CN" : "en-GB";
    const timeZone = (CW.me && CW.me.timezone) || undefined;
    const day = (t) => new Date(t * 1000).toLocaleDateString(locale, { timeZone });
    const opts = { hour: "2-digit", minute: "2-digit", hour12: false, timeZone };
    if (day(ts) !== day(CW.now())) { opts.month = "2-digit"; opts.day = "2-digit"; }
    return new Date(ts * 1000).toLocaleString(locale, opts);
  }

  function muted() { // active silences: the resident's alerts (one kind, or all) do not open
    const el = document.getElementById("muted");
    const list = detail.silences || []; // a district console's stale record may lack them
    el.hidden = !list.length;
    const zh = CW.lang === "zh";
    el.innerHTML = list.map((s) => {
      const until = untilText(s.until);
      let text;
      if (!s.kind) text = `${CW.t("muted_until")} ${until}`;
      else if (zh) text = `${CW.t("k_" + s.kind)}${CW.t("muted_kind")} ${until}`;
      else { const k = CW.t("k_" + s.kind); text = `${k[0].toUpperCase()}${k.slice(1)} ${CW.t("muted_kind")} ${until}`; }
      text += zh ? `（${s.reason}）` : ` (${s.reason})`;
      return `<li data-silence-id="${CW.esc(s.silence_id)}" data-kind="${CW.esc(s.kind || "")}">
        <span class="text">${CW.esc(text)}</span>
        <span class="by">${CW.esc(CW.t("muted_by"))} ${CW.esc(s.by)}</span>
        <button type="button" data-end="${CW.esc(s.silence_id)}">${CW.esc(CW.t("end_silence"))}</button></li>`;
    }).join("");
  }

  async function refresh() { // the record again (after ending a silence); the charts stay
    detail = await CW.api(`/api/residents/${encodeURIComponent(rid)}`);
    CW.syncClock(detail.now);
    stale(); about(); muted(); history();
  }

  document.getElementById("muted").addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-end]");
    if (!b) return;
    b.disabled = true;
    const err = document.getElementById("err");
    try {
      await CW.api(`/api/silences/${encodeURIComponent(b.dataset.end)}`, { method: "DELETE" });
    } catch (e) {
      if (e.status !== 404) { // 404: it ended meanwhile (expired, or someone else): refresh
        err.hidden = false;
        err.textContent = e.message; // in the UI's language by its code (e.g. forbidden, csrf)
        b.disabled = false;
        return;
      }
    }
    err.hidden = true;
    await refresh();
  });

  function history() {
    document.getElementById("history").innerHTML = detail.alerts.map((a) => `
      <li class="sev-${CW.esc(a.severity)}" data-alert-id="${CW.esc(a.alert_id)}">
        <details><summary><b>${CW.esc(CW.t("k_" + a.kind))}</b> · ${CW.esc(CW.t("sev_" + a.severity))}
          · ${CW.esc(CW.t("state_" + a.state))} · ${CW.esc(CW.fmtTime(a.opened_at, true))}
          <span class="evidence">${CW.esc(CW.lang === "zh" ? a.message_zh : a.message)}</span>
          ${a.note ? `<span class="note">“${CW.esc(a.note)}”</span>` : ""}</summary>
          <h4>${CW.esc(CW.t("audit"))}</h4>
          <ol class="audit">${a.audit.map((e) => `<li>${CW.esc(CW.fmtTime(e.ts, true))} · <b>${CW.esc(e.actor)}</b>
            · ${CW.esc(e.action)} <code>${CW.esc(JSON.stringify(e.detail))}</code></li>`).join("")}</ol>
        </details></li>`).join("");
  }

  async function load() {
    try {
      [detail, series] = await Promise.all([
        CW.api(`/api/residents/${encodeURIComponent(rid)}`),
        CW.api(`/api/residents/${encodeURIComponent(rid)}/series?hours=24`),
      ]);
    } catch (e) {
      const el = document.getElementById("err");
      el.hidden = false;
      el.textContent = e.status === 403 ? CW.t("forbidden") : e.message;
      return;
    }
    CW.syncClock(detail.now);
    stale(); about(); muted(); history(); drawCharts();
    document.body.dataset.ready = "1";
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => detail && drawCharts(), 200); });
  window.addEventListener("cw-lang", () => { if (detail) { stale(); about(); muted(); history(); drawCharts(); } });
  CW.init("residents").then(load);
})();

/* Routine tasks ("four ones"): my tasks today, overdue, by institution; complete with feedback. */
"use strict";
(() => {
  const OUTCOMES = ["ok", "concern", "hazard_found", "not_reached", "other"];
  const SEVERITIES = ["low", "medium", "high", "critical"];
  const list = document.getElementById("tasks");
  const instSel = document.getElementById("institution");
  const params = new URLSearchParams(location.search);
  let view = ["mine", "overdue", "institution"].includes(params.get("view")) ? params.get("view") : "mine";
  let tasks = [];
  let note = null; // the `mine` view's note: this tier never answers for a task itself

  const pct = (v) => (v === null || v === undefined ? "—" : `${(100 * v).toFixed(0)}%`);

  function checkLine(c) { // a daily monitoring check's figures, when the task has them
    if (!c) return "";
    return `<span class="check cs-${CW.esc(c.status)}">${CW.esc(CW.t("check"))}:
      ${CW.esc(CW.t("cs_" + c.status))} · ${CW.esc(CW.t("completeness"))} ${pct(c.completeness)}</span>`;
  }

  function card(t) {
    const opts = (xs, prefix, sel) => xs.map((x) => `<option value="${x}" ${x === sel ? "selected" : ""}
      data-i18n="${prefix + x}">${CW.esc(CW.t(prefix + x))}</option>`).join("");
    return `<li class="task ${t.overdue ? "overdue" : ""} tier-${t.tier}" data-task-id="${CW.esc(t.task_id)}"
        data-kind="${CW.esc(t.kind)}" data-state="${CW.esc(t.state)}">
      <div class="main">
        <div class="line1">
          <span class="kind">${CW.esc(CW.t("rk_" + t.kind))}</span>
          <a class="who" href="/residents/${encodeURIComponent(t.resident_id)}">${CW.esc(t.resident_name)}</a>
          <span class="town">${CW.esc(t.town_name)}</span>
          ${t.overdue ? `<span class="late">${CW.esc(CW.t("overdue"))}</span>` : ""}
          <span class="tier">${CW.esc(CW.t("now_with"))}: T${t.tier} ${CW.esc(CW.t("tier_" + t.tier))}</span>
        </div>
        <div class="line3">
          <span>${CW.esc(CW.t("due"))} <b>${CW.esc(CW.fmtTime(t.due_at, true))}</b></span>
          <span>${CW.esc(CW.t("period"))} ${CW.esc(t.period)}</span>
          <span>${CW.esc(CW.t("owner"))} ${CW.esc(t.owner_name || t.owner || "—")}</span>
          ${t.institution_name ? `<span>${CW.esc(t.institution_name)}</span>` : ""}
          ${checkLine(t.check)}
        </div>
        <form class="complete-form" hidden>
          <label><span data-i18n="outcome">${CW.esc(CW.t("outcome"))}</span> <select name="outcome">${opts(OUTCOMES, "oc_", "ok")}</select></label>
          <textarea name="notes" rows="2" maxlength="4000" data-i18n-ph="task_notes" placeholder="${CW.esc(CW.t("task_notes"))}"></textarea>
          <textarea name="hazard" rows="1" maxlength="2000" data-i18n-ph="hazard" placeholder="${CW.esc(CW.t("hazard"))}"></textarea>
          <label><span data-i18n="hazard_severity">${CW.esc(CW.t("hazard_severity"))}</span> <select name="hazard_severity">${opts(SEVERITIES, "sev_", "high")}</select></label>
          <div class="row"><button type="submit" class="primary" data-i18n="submit">${CW.esc(CW.t("submit"))}</button>
          <button type="button" class="cancel" data-i18n="cancel">${CW.esc(CW.t("cancel"))}</button>
          <span class="err" role="alert"></span></div>
        </form>
      </div>
      <div class="actions"><button type="button" class="primary act" data-act="complete">${CW.esc(CW.t("complete"))}</button></div>
    </li>`;
  }

  const PARTS = [".line1", ".line3", ".actions"]; // all but the form

  function render() {
    document.querySelectorAll("#views .chip").forEach((b) => {
      b.classList.toggle("on", b.dataset.view === view);
      b.setAttribute("aria-selected", String(b.dataset.view === view));
    });
    instSel.hidden = view !== "institution";
    // in place, by task id: open completion forms survive (CW.renderCards)
    CW.renderCards(list, tasks, { idOf: (t) => t.task_id, key: "taskId", card, parts: PARTS });
    // an empty "my tasks" by design says why and where to look, instead of looking idle
    const explain = Boolean(view === "mine" && note && tasks.length === 0);
    const noteEl = document.getElementById("mine-note");
    noteEl.hidden = !explain;
    if (explain) {
      noteEl.querySelector("span").textContent = CW.t("mine_above_max")
        .replace("{max}", note.max_tier).replace("{tier}", CW.t("tier_" + note.max_tier))
        .replace("{n}", note.overdue);
    }
    document.getElementById("empty").hidden = tasks.length > 0 || explain;
    const late = tasks.filter((t) => t.overdue).length;
    document.getElementById("counts").textContent = `${tasks.length} · ${late} ${CW.t("overdue")}`;
  }

  // Switching tabs (or institutions) quickly leaves earlier answers on their way; only the
  // latest load's answer is shown, so a tab never lists another tab's tasks.
  let loadsStarted = 0;

  async function load() {
    const gen = ++loadsStarted;
    const err = document.getElementById("error");
    const q = new URLSearchParams({ view });
    if (view === "institution" && instSel.value) q.set("institution", instSel.value);
    let data = null, failure = null;
    try {
      data = await CW.api(`/api/routines/tasks?${q}`);
    } catch (e) {
      failure = e;
    }
    answered();
    if (gen !== loadsStarted) return; // a later load's answer counts
    if (failure) {
      tasks = [];
      note = null;
      err.textContent = failure.status === 403 ? CW.t("forbidden") : failure.status === 404 ? CW.t("routines_off") : failure.message;
      err.hidden = false;
    } else {
      CW.syncClock(data.now);
      tasks = data.tasks;
      note = data.note || null;
      err.hidden = true;
    }
    render();
  }

  function answered() { // for tests: how many loads have had their answer
    document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
  }

  document.getElementById("views").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-view]");
    if (!b || b.dataset.view === view) return;
    view = b.dataset.view;
    history.replaceState(null, "", `/tasks?view=${view}`);
    load();
  });
  instSel.addEventListener("change", () => load());

  list.addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    const form = b.closest("li").querySelector(".complete-form");
    if (b.classList.contains("cancel")) { form.hidden = true; return; }
    if (b.dataset.act === "complete") { form.hidden = false; form.notes.focus(); }
  });
  list.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target, li = form.closest("li");
    const err = form.querySelector(".err");
    const notes = form.notes.value.trim(), hazard = form.hazard.value.trim();
    if (!notes) { err.textContent = CW.t("notes_required"); return; }
    const body = { outcome: form.outcome.value, notes };
    if (hazard) { body.hazard = hazard; body.hazard_severity = form.hazard_severity.value; }
    form.querySelector("button[type=submit]").disabled = true;
    try {
      const res = await CW.api(`/api/routines/tasks/${encodeURIComponent(li.dataset.taskId)}/complete`,
        { method: "POST", body });
      const done = res.task;
      document.body.dataset.lastCompleted = done.task_id;
      document.body.dataset.lastAlert = done.alert_id || "";
      tasks = tasks.filter((t) => t.task_id !== done.task_id);
      render();
      const msg = document.getElementById("notice");
      msg.hidden = false;
      msg.textContent = `${CW.t("rk_" + done.kind)} · ${done.resident_name}: ${CW.t("completed")}` +
        (done.alert_id ? ` · ${CW.t("alert_opened")} ${done.alert_id}` : "");
    } catch (e) {
      err.textContent = e.message;
      form.querySelector("button[type=submit]").disabled = false;
    }
  });
  window.addEventListener("cw-lang", render);

  CW.init("tasks").then(async () => {
    try {
      const scope = await CW.api("/api/routines/scope");
      instSel.insertAdjacentHTML("beforeend", scope.institutions.map((i) =>
        `<option value="${CW.esc(i.id)}">${CW.esc(i.name)}</option>`).join(""));
    } catch (e) { /* no routines: load() says so */ }
    await load();
    document.body.dataset.ready = "1";
    setInterval(() => { if (!list.querySelector(".complete-form:not([hidden])")) load(); }, 60000);
  });
})();

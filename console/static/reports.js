/* Supervision reports: pick a day or a month (and a town in scope); the report's own HTML
   is shown inline in a script-less sandboxed frame, as it prints, with download links. */
"use strict";
(() => {
  const form = document.getElementById("pick");
  const kind = document.getElementById("kind");
  const month = document.getElementById("month");
  const day = document.getElementById("day");
  const town = document.getElementById("town");
  const frame = document.getElementById("report");
  const err = document.getElementById("error");
  let district = false;

  function today() { // the deployment's local date, from the server clock
    const f = new Intl.DateTimeFormat("en-CA", {
      timeZone: CW.me.timezone, year: "numeric", month: "2-digit", day: "2-digit" });
    return f.format(new Date(CW.now() * 1000)); // YYYY-MM-DD
  }

  function label() { return kind.value === "day" ? day.value : month.value; }

  function paintKind() {
    month.hidden = kind.value !== "month";
    day.hidden = kind.value !== "day";
  }

  function fitFrame() { // same origin (sandbox allows it, scripts stay off): size to content
    const doc = frame.contentDocument;
    if (doc && doc.documentElement) frame.style.height = `${doc.documentElement.scrollHeight + 24}px`;
  }

  async function show() {
    const l = label();
    if (!/^\d{4}-\d{2}(-\d{2})?$/.test(l)) return;
    const q = town.value ? `?town=${encodeURIComponent(town.value)}` : "";
    const base = `/api/routines/reports/${l}`;
    history.replaceState(null, "", `/reports?period=${l}${town.value ? `&town=${encodeURIComponent(town.value)}` : ""}`);
    err.hidden = true;
    document.getElementById("loading").hidden = false;
    document.body.dataset.ready = "0";
    try {
      const r = await fetch(`${base}/html${q}`, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (r.status === 401) { location.href = "/login"; return; }
      if (!r.ok) {
        const data = await r.json().catch(() => ({}));
        throw new Error(r.status === 404 && !data.detail ? CW.t("routines_off") : CW.errorText(data));
      }
      const html = await r.text();
      await new Promise((resolve) => {
        frame.addEventListener("load", resolve, { once: true });
        frame.hidden = false;
        frame.srcdoc = html;
      });
      fitFrame();
      const name = `carewatch-report-${l}${town.value ? "-" + town.value : ""}`;
      const links = [["dl-html", `${base}/html${q}`, `${name}.html`], ["dl-json", `${base}${q}`, `${name}.json`]];
      links.forEach(([id, href, file]) => {
        const a = document.getElementById(id);
        a.href = href; a.download = file; a.hidden = false;
      });
      document.body.dataset.report = l;
    } catch (e) {
      frame.hidden = true;
      err.textContent = e.message;
      err.hidden = false;
    } finally {
      document.getElementById("loading").hidden = true;
      document.body.dataset.ready = "1";
    }
  }

  kind.addEventListener("change", () => { paintKind(); show(); });
  form.addEventListener("submit", (ev) => { ev.preventDefault(); show(); });
  window.addEventListener("resize", fitFrame);
  window.addEventListener("cw-lang", () => {
    if (district) town.options[0].textContent = CW.t("district");
  });

  CW.init("reports").then(async () => {
    const now = today();
    month.value = now.slice(0, 7);
    day.value = now;
    const params = new URLSearchParams(location.search);
    const period = params.get("period") || "";
    if (/^\d{4}-\d{2}-\d{2}$/.test(period)) { kind.value = "day"; day.value = period; }
    else if (/^\d{4}-\d{2}$/.test(period)) { kind.value = "month"; month.value = period; }
    paintKind();
    try {
      const scope = await CW.api("/api/routines/scope");
      district = scope.district;
      town.innerHTML = (district ? `<option value="">${CW.esc(CW.t("district"))}</option>` : "") +
        scope.towns.map((t) => `<option value="${CW.esc(t.id)}">${CW.esc(t.name)}</option>`).join("");
      if (params.get("town")) town.value = params.get("town");
    } catch (e) {
      err.textContent = e.status === 404 ? CW.t("routines_off") : e.message;
      err.hidden = false;
      document.body.dataset.ready = "1";
      return;
    }
    await show();
  });
})();

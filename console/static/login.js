/* Sign-in: JSON to /api/login; the session cookie is set by the server (HttpOnly). */
"use strict";
(() => {
  const form = document.getElementById("login");
  const langBtn = document.getElementById("lang");
  const paint = () => { langBtn.textContent = CW.lang === "zh" ? "EN" : "中文"; };
  langBtn.addEventListener("click", () => { CW.setLang(CW.lang === "zh" ? "en" : "zh"); paint(); });
  CW.applyI18n(); paint();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = document.getElementById("err");
    err.textContent = "";
    try {
      await CW.api("/api/login", { method: "POST", noRedirect: true,
        body: { staff_id: form.staff_id.value.trim(), password: form.password.value } });
      location.href = "/";
    } catch (e) {
      err.textContent = CW.t(e.status === 429 ? "locked" : "login_failed");
    }
  });
})();

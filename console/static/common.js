/* CareWatch console: shared helpers (labels in Chinese and English, API calls, header). */
"use strict";
const CW = (() => {
  const L = {
    zh: {
      brand: "CareWatch 监护中心", nav_board: "告警", nav_residents: "居民", logout: "退出",
      login_title: "登录", staff_id: "工号", password: "密码", sign_in: "登录",
      login_failed: "工号或密码错误", locked: "失败次数过多，请稍后再试",
      board_title: "实时告警", no_alerts: "当前没有未办结的告警", open_count: "未办结",
      unacked_count: "待确认", ack: "确认", dispatch: "派单（上门）", resolve: "办结",
      note: "反馈（发现了什么、做了什么）", submit: "提交", cancel: "取消",
      note_required: "办结需要填写反馈", waiting: "已等待", next_escalation: "距升级",
      renotify: "距再次通知", stopped: "已停止", acked_by: "确认人", dispatched_by: "派单人",
      sound_on: "声音：开", sound_off: "声音：关", live: "实时", reconnecting: "重新连接中…", timer_unknown: "升级计时暂停（监测进程无响应）",
      residents_title: "居民", all_towns: "全部镇街", all: "全部", search: "搜索姓名、编号、设备…",
      col_resident: "居民", col_town: "镇街", col_status: "状态", col_alerts: "告警",
      col_hr: "心率", col_spo2: "血氧", col_battery: "电量", col_last_seen: "最后在线",
      showing: "显示", of: "共", never: "从未",
      resident_title: "居民详情", conditions: "病史", none: "无", device: "设备", online: "在线",
      offline_s: "离线", unknown: "未知", worn: "佩戴", not_worn_s: "未佩戴", battery: "电量",
      last_seen: "最后在线", charts: "近 24 小时体征", chart_time: "时间", thresholds: "告警阈值",
      alert_history: "告警记录", audit: "操作记录", carer: "服务人员", institution: "服务机构",
      town: "镇街", back: "返回",
      st_alert: "告警", st_unmonitored: "未监测", st_offline: "离线", st_not_worn: "未佩戴", st_low_battery: "电量低",
      st_normal: "正常",
      sev_critical: "危急", sev_high: "高", sev_medium: "中", sev_low: "低",
      stale: "数据未更新（监测进程无响应）",
      stale_record: "该居民当前未被监测：监测进程无响应", stale_as_of: "以下为最后数据，时间", stale_no_data: "暂无该居民的最后数据，仅显示登记信息",
      no_series: "暂无体征数据",
      state_open: "待确认", state_escalated: "已升级", state_acknowledged: "已确认",
      state_dispatched: "已派单", state_resolved: "已办结",
      tier_1: "服务人员", tier_2: "服务机构", tier_3: "镇（街道）民政办", tier_4: "区级救助服务中心",
      v_hr: "心率 (次/分)", v_spo2: "血氧饱和度 (%)", v_rr: "呼吸频率 (次/分)",
      v_temp_c: "体温 (°C)", v_bp: "血压 (mmHg)", v_activity: "活动量 (g)",
      s_hr: "心率", s_spo2: "血氧", s_rr: "呼吸", s_temp_c: "体温", s_sbp: "收缩压", s_dbp: "舒张压",
      s_activity: "活动量",
      k_fall: "跌倒", k_hypoxemia: "低血氧", k_bradycardia: "心动过缓", k_tachycardia: "心动过速",
      k_bradypnoea: "呼吸过缓", k_tachypnoea: "呼吸过速", k_fever: "发热", k_hypothermia: "体温过低",
      k_hypotension: "低血压", k_hypertensive_crisis: "高血压危象", k_news2: "NEWS2 预警评分",
      k_baseline_deviation: "偏离个人基线", k_inactivity: "长时间无活动", k_not_worn: "未佩戴",
      k_device_offline: "设备离线", k_low_battery: "电量低", k_hazard: "安全隐患",
      muted_until: "已静音至", muted_kind: "告警已静音至", muted_by: "设置人", end_silence: "结束静音",
      muted: "已静音",
      error: "出错了", forbidden: "无权查看（超出您的管辖范围）",
      nav_tasks: "任务", nav_reports: "报告", tasks_title: "任务（四个一）",
      view_mine: "今日待办", view_overdue: "逾期", view_institution: "按机构",
      all_institutions: "全部机构", no_tasks: "没有待办任务",
      mine_above_max: "本级不直接承办四个一任务：逾期任务最多升级到第 {max} 级（{tier}）。管辖范围内逾期 {n} 项。",
      see_overdue: "查看逾期任务",
      rk_daily_check: "每天一监测", rk_weekly_call: "每周一电话",
      rk_monthly_inspection: "每月一排查", rk_monthly_visit: "每月一服务",
      due: "截止", overdue: "已逾期", now_with: "当前责任", owner: "负责人", period: "周期",
      complete: "完成", outcome: "结果", task_notes: "反馈（做了什么、发现了什么）",
      hazard: "安全隐患（如有，将生成告警）", hazard_severity: "隐患等级",
      notes_required: "完成任务需要填写反馈", completed: "已完成", alert_opened: "已生成告警",
      oc_ok: "正常", oc_concern: "需关注", oc_hazard_found: "发现隐患", oc_not_reached: "未联系上",
      oc_other: "其他", check: "监测", completeness: "数据完整率", cs_ok: "正常",
      cs_attention: "需关注", cs_action_needed: "需处置",
      reports_title: "监管报告", report_day: "日报", report_month: "月度监管报告",
      district: "全区", show: "显示", download_html: "下载 HTML", download_json: "下载 JSON",
      loading: "加载中…", routines_off: "未启用四个一任务",
      mon_down: "监测中断：居民数据当前未被监测", mon_degraded: "监测降级",
      mon_partial: "监测中断：部分居民当前未被监测", worker_n: "监测进程 {n}",
      mon_unreachable: "与监护平台服务器的连接已中断，本页内容可能已过时",
      p_pipeline_stopped: "监测处理已停止",
      p_pipeline_stalled: "监测处理无响应",
      p_broker_link_down: "与设备消息代理的连接已断开", p_not_subscribed: "未订阅设备数据",
      p_no_data: "未收到任何设备数据", p_store_unwritable: "告警无法写入存储",
      p_worker_down: "监测进程无响应，以下镇街未被监测",
      p_ingest_lagging: "数据处理积压", p_inbox_shedding: "正在舍弃部分体征数据",
      p_history_losing: "历史数据存储正在丢失样本", p_broker_dropping: "消息代理正在丢弃消息",
      p_notifications_failing: "告警通知发送失败", p_inbox_filling: "接收队列即将满",
      p_degraded: "运行降级",
      // error answers by their `code` (console/errors.py); an unknown code shows the server's words
      e_unauthorized: "未登录或登录已过期，请重新登录", e_login_failed: "工号或密码错误",
      e_locked_out: "失败次数过多，请稍后再试", e_csrf: "页面已过期，请刷新页面后重试",
      e_forbidden: "超出您的管辖范围，无权查看或操作",
      e_not_found: "未找到：可能已被处理或已结束，请刷新页面",
      e_conflict: "操作未执行：状态已变化，请刷新后重试",
      e_alert_changed: "操作未执行：该告警的状态已变化（可能已被他人确认、派单或办结），请查看其当前状态",
      e_invalid: "提交的内容不符合要求，请检查后重试", e_bad_request: "请求无效，请刷新页面后重试",
      e_not_allowed: "此处不支持该操作，请刷新页面后重试",
      e_notes_required: "完成任务需要填写反馈", e_hazard_required: "结果为“发现隐患”时需要填写隐患情况",
      e_task_closed: "该任务已完成，无需再次提交", e_task_missed: "该任务的周期已结束（已逾期），无法再完成",
      e_task_refused: "该任务当前无法完成（可能已被他人处理），请刷新后查看",
      e_worker_down: "该居民的监测进程无响应：操作未执行，请在其恢复后重试",
      e_past_deadline: "该居民的监测进程无响应：操作未执行，请在其恢复后重试",
      e_unavailable: "服务器暂时无法处理（监测进程繁忙或正在停止），请稍后刷新，查看操作是否已完成",
      e_timeout: "请求超时，请稍后刷新查看结果", e_no_report: "本控制台读不到生成报告所需的数据",
    },
    en: {
      brand: "CareWatch monitoring centre", nav_board: "Alerts", nav_residents: "Residents",
      logout: "Sign out", login_title: "Sign in", staff_id: "Staff ID", password: "Password",
      sign_in: "Sign in", login_failed: "Wrong staff ID or password",
      locked: "Too many failed attempts; try again later", board_title: "Live alerts",
      no_alerts: "No open alerts", open_count: "open", unacked_count: "unacknowledged",
      ack: "Acknowledge", dispatch: "Dispatch", resolve: "Resolve",
      note: "Feedback (what was found, what was done)", submit: "Submit", cancel: "Cancel",
      note_required: "Resolving needs a feedback note", waiting: "waiting",
      next_escalation: "escalates in", renotify: "re-notifies in", stopped: "stopped",
      acked_by: "acknowledged by", dispatched_by: "dispatched by", sound_on: "Sound: on",
      sound_off: "Sound: off", live: "live", reconnecting: "reconnecting…", timer_unknown: "escalation paused (worker not answering)",
      residents_title: "Residents", all_towns: "All towns", all: "All",
      search: "Search name, id, device…", col_resident: "Resident", col_town: "Town",
      col_status: "Status", col_alerts: "Alerts", col_hr: "HR", col_spo2: "SpO2",
      col_battery: "Battery", col_last_seen: "Last seen", showing: "Showing", of: "of",
      never: "never", resident_title: "Resident", conditions: "Conditions", none: "none",
      device: "Device", online: "online", offline_s: "offline", unknown: "unknown",
      worn: "worn", not_worn_s: "not worn", battery: "Battery", last_seen: "Last seen",
      charts: "Vital signs, last 24 h", chart_time: "Time", thresholds: "Alert thresholds",
      alert_history: "Alert history", audit: "Audit trail", carer: "Service staff",
      institution: "Institution", town: "Town", back: "Back",
      st_alert: "alert", st_unmonitored: "not monitored", st_offline: "offline", st_not_worn: "not worn",
      st_low_battery: "low battery", st_normal: "normal",
      sev_critical: "critical", sev_high: "high", sev_medium: "medium", sev_low: "low",
      stale: "not updating (its worker is not answering)",
      stale_record: "This resident is not being monitored now: their monitoring worker is not answering",
      stale_as_of: "What follows was last seen at", stale_no_data: "No data from before is at hand: only the registry record is shown",
      no_series: "No vital signs to show",
      state_open: "open", state_escalated: "escalated", state_acknowledged: "acknowledged",
      state_dispatched: "dispatched", state_resolved: "resolved",
      tier_1: "service staff", tier_2: "institution", tier_3: "town office", tier_4: "district",
      v_hr: "Heart rate (bpm)", v_spo2: "SpO2 (%)", v_rr: "Respiratory rate (/min)",
      v_temp_c: "Temperature (°C)", v_bp: "Blood pressure (mmHg)", v_activity: "Activity (g)",
      s_hr: "HR", s_spo2: "SpO2", s_rr: "RR", s_temp_c: "Temp", s_sbp: "Systolic", s_dbp: "Diastolic",
      s_activity: "Activity",
      k_fall: "fall", k_hypoxemia: "hypoxemia", k_bradycardia: "bradycardia",
      k_tachycardia: "tachycardia", k_bradypnoea: "bradypnoea", k_tachypnoea: "tachypnoea",
      k_fever: "fever", k_hypothermia: "hypothermia", k_hypotension: "hypotension",
      k_hypertensive_crisis: "hypertensive crisis", k_news2: "NEWS2",
      k_baseline_deviation: "baseline deviation", k_inactivity: "inactivity",
      k_not_worn: "not worn", k_device_offline: "device offline", k_low_battery: "low battery",
      k_hazard: "safety hazard",
      muted_until: "Muted until", muted_kind: "alerts muted until", muted_by: "set by",
      end_silence: "End silence", muted: "muted",
      error: "Something went wrong", forbidden: "Outside your scope",
      nav_tasks: "Tasks", nav_reports: "Reports", tasks_title: "Tasks (the four ones)",
      view_mine: "My tasks today", view_overdue: "Overdue", view_institution: "By institution",
      all_institutions: "All institutions", no_tasks: "No open tasks",
      mine_above_max: "Your tier has no routine tasks of its own: overdue tasks escalate up to tier {max} ({tier}). {n} overdue in your scope.",
      see_overdue: "See overdue tasks",
      rk_daily_check: "Daily monitoring", rk_weekly_call: "Weekly call",
      rk_monthly_inspection: "Monthly inspection", rk_monthly_visit: "Monthly service",
      due: "due", overdue: "overdue", now_with: "now with", owner: "owner", period: "period",
      complete: "Complete", outcome: "Outcome", task_notes: "Feedback (what was done, what was found)",
      hazard: "Safety hazard (if any; opens an alert)", hazard_severity: "Hazard severity",
      notes_required: "Completing a task needs a feedback note", completed: "completed",
      alert_opened: "alert opened", oc_ok: "ok", oc_concern: "concern",
      oc_hazard_found: "hazard found", oc_not_reached: "not reached", oc_other: "other",
      check: "check", completeness: "data completeness", cs_ok: "ok", cs_attention: "attention",
      cs_action_needed: "action needed",
      reports_title: "Supervision reports", report_day: "Daily report",
      report_month: "Monthly supervision report", district: "District", show: "Show",
      download_html: "Download HTML", download_json: "Download JSON", loading: "Loading…",
      routines_off: "Routines are not enabled",
      mon_down: "Monitoring down: residents are not being monitored",
      mon_degraded: "Monitoring degraded",
      mon_partial: "Monitoring down: some residents are not being monitored", worker_n: "worker {n}",
      mon_unreachable: "Connection to the CareWatch server lost: this page may be out of date",
      p_pipeline_stopped: "the monitoring pipeline stopped",
      p_pipeline_stalled: "the monitoring pipeline is not responding",
      p_broker_link_down: "the link to the device broker is down",
      p_not_subscribed: "not subscribed to device data", p_no_data: "no device data at all",
      p_worker_down: "a monitoring worker is not answering; these towns are not monitored",
      p_store_unwritable: "alerts cannot be stored", p_ingest_lagging: "processing is behind",
      p_inbox_shedding: "some vital signs are being shed",
      p_history_losing: "the history store is losing samples",
      p_broker_dropping: "the broker is dropping messages",
      p_notifications_failing: "alert notifications are failing",
      p_inbox_filling: "the inbox is nearly full", p_degraded: "degraded",
      e_unauthorized: "You are not signed in (or the session expired): sign in again",
      e_login_failed: "Wrong staff ID or password", e_locked_out: "Too many failed attempts; try again later",
      e_csrf: "This page has expired: reload it and try again",
      e_forbidden: "Outside your scope: you may not see or change this",
      e_not_found: "Not found: it may have been handled or ended meanwhile; reload the page",
      e_conflict: "Nothing was done: it changed meanwhile; reload and try again",
      e_alert_changed: "Nothing was done: this alert changed meanwhile (someone else may have acknowledged, dispatched or resolved it); see its current state",
      e_invalid: "The request was not accepted as sent: check it and try again",
      e_bad_request: "Bad request: reload the page and try again",
      e_not_allowed: "This action is not supported here: reload the page and try again",
      e_notes_required: "Completing a task needs a feedback note",
      e_hazard_required: "The outcome “hazard found” needs a description of the hazard",
      e_task_closed: "This task is already completed", e_task_missed: "This task's period has closed (missed): it can no longer be completed",
      e_task_refused: "This task cannot be completed now (someone else may have handled it); reload to see it",
      e_worker_down: "This resident's monitoring worker is not answering: nothing was done. Try again once it is back.",
      e_past_deadline: "This resident's monitoring worker is not answering: nothing was done. Try again once it is back.",
      e_unavailable: "The server could not handle this now (the pipeline is busy or stopping); reload in a moment to see whether it was done",
      e_timeout: "The request timed out; reload in a moment to see the result",
      e_no_report: "This console cannot read the data the report needs",
    },
  };
  let lang = localStorage.getItem("cw.lang") || "zh";
  let me = null;
  let offsetMs = 0; // server clock minus browser clock

  const known = (k) => (L[lang] && L[lang][k]) || L.en[k];
  const t = (k) => known(k) || k;
  // An error answer in the UI's language: by its `code`, else the server's own words.
  function errorText(data) {
    const byCode = data && typeof data.code === "string" ? known("e_" + data.code) : undefined;
    if (byCode) return byCode;
    return data && typeof data.detail === "string" && data.detail ? data.detail : t("error");
  }
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

  function applyI18n(root = document) {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    root.querySelectorAll("[data-i18n-ph]").forEach((el) => { el.placeholder = t(el.dataset.i18nPh); });
  }

  function setLang(l) {
    lang = l;
    localStorage.setItem("cw.lang", l);
    applyI18n();
    window.dispatchEvent(new Event("cw-lang"));
  }

  function syncClock(serverNow) { if (serverNow) offsetMs = serverNow * 1000 - Date.now(); }
  const now = () => (Date.now() + offsetMs) / 1000;

  async function api(path, opts = {}) {
    const method = opts.method || "GET";
    const headers = { Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && me && me.csrf) headers["X-CSRF-Token"] = me.csrf;
    const r = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
    });
    if (r.status === 401 && !opts.noRedirect) { location.href = "/login"; throw new Error("401"); }
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = new Error(errorText(data));
      e.code = data.code;
      e.status = r.status;
      throw e;
    }
    return data;
  }

  function fmtDur(s) {
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const pad = (x) => String(x).padStart(2, "0");
    return h ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
  }
  // times in the UI's language and the deployment's time zone, on a 24-hour clock (the
  // charts use these too): day zh "11月28日", en "28 Nov"; time "16:29"; seconds "16:29:00"
  const formats = new Map(); // Intl formatters by language, time zone and kind
  const KINDS = {
    day: { month: "short", day: "numeric" },
    time: { hour: "2-digit", minute: "2-digit", hourCycle: "h23" },
    seconds: { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" },
  };
  function fmt(kind, ts) {
    const timeZone = (me && me.timezone) || undefined;
    const key = `${lang}|${timeZone}|${kind}`;
    if (!formats.has(key)) {
      formats.set(key, new Intl.DateTimeFormat(lang === "zh" ? "zh-CN" : "en-GB",
        { ...KINDS[kind], timeZone }));
    }
    return formats.get(key).format(new Date(ts * 1000));
  }
  // zh "11月28日 16:29:00", en "28 Nov 16:29:00" (without the date: "16:29:00")
  function fmtTime(ts, withDate) {
    if (ts === null || ts === undefined) return t("never");
    const time = fmt("seconds", ts);
    return withDate ? `${fmt("day", ts)} ${time}` : time;
  }
  function ago(ts) { return ts === null || ts === undefined ? t("never") : fmtDur(now() - ts); }

  function header(active) {
    const h = document.createElement("header");
    h.className = "top";
    h.innerHTML = `
      <a class="brand" href="/" data-i18n="brand"></a>
      <nav><a href="/" class="${active === "board" ? "on" : ""}" data-i18n="nav_board"></a>
        <a href="/residents" class="${active === "residents" ? "on" : ""}" data-i18n="nav_residents"></a>
        <a href="/tasks" class="${active === "tasks" ? "on" : ""}" data-i18n="nav_tasks" data-routines hidden></a>
        <a href="/reports" class="${active === "reports" ? "on" : ""}" data-i18n="nav_reports" data-routines hidden></a></nav>
      <span class="spacer"></span>
      <span class="user" id="cw-user"></span>
      <button type="button" class="lang" id="cw-lang">${lang === "zh" ? "EN" : "中文"}</button>
      <button type="button" id="cw-logout" data-i18n="logout"></button>`;
    document.body.prepend(h);
    h.querySelector("#cw-lang").addEventListener("click", (ev) => {
      setLang(lang === "zh" ? "en" : "zh");
      ev.target.textContent = lang === "zh" ? "EN" : "中文";
    });
    h.querySelector("#cw-logout").addEventListener("click", async () => {
      try { await api("/api/logout", { method: "POST" }); } finally { location.href = "/login"; }
    });
  }

  // Every page says whether residents are being monitored at all: a console that looks
  // calm while the broker link is down (or while this server is unreachable) is the worst
  // failure an on-call room can have. GET /api/health every HEALTH_MS; body[data-monitoring]
  // is the banner's level: ok | degraded | down | unreachable.
  const HEALTH_MS = 5000;
  let health = null; // the last answer, or "unreachable"

  // The level is the worst of the state and of its problems: the district console answers
  // "degraded" while one worker is silent (the other towns are watched), but that worker's
  // residents are not monitored at all, which is "down" (red) for on-call staff. `partial`:
  // down for some residents only.
  function healthLevel(h) {
    if (h === "unreachable") return { level: "unreachable", partial: false };
    if (!h) return { level: "ok", partial: false };
    const someDown = (h.problems || []).some((p) => p.level === "down");
    if (h.state === "down" || !someDown) return { level: h.state, partial: false };
    return { level: "down", partial: true };
  }

  function problemText(p) {
    const zh = lang === "zh";
    const list = (xs) => xs.join(zh ? "、" : ", ");
    const aside = (s) => (zh ? `（${s}）` : ` (${s})`);
    let label = known("p_" + p.code) || p.detail || p.code;
    if (p.towns && p.towns.length) { // which towns it concerns (a worker that is down)
      label += (zh ? "：" : ": ") + list(p.towns);
    } else if (p.worker !== undefined && p.worker !== null) { // a silent worker, towns unknown
      label += aside(t("worker_n").replace("{n}", p.worker));
    } else if (p.workers && health.workers > 1) { // the district console: which workers
      label += aside(t("worker_n").replace("{n}", list(p.workers)));
    }
    if (p.since === null || p.since === undefined) return esc(label);
    const dur = fmtDur((health.now || now()) - p.since);
    const at = esc(fmtTime(p.since));
    return zh ? `${esc(label)}（自 ${at} 起，已持续 ${esc(dur)}）`
      : `${esc(label)} (since ${at}, for ${esc(dur)})`;
  }

  function paintHealth() {
    const el = document.getElementById("cw-health");
    const { level, partial } = healthLevel(health);
    document.body.dataset.monitoring = level;
    el.hidden = level === "ok";
    el.className = `health ${level}`;
    el.dataset.partial = partial ? "1" : "0";
    if (level === "ok") { el.textContent = ""; return; }
    const problems = level === "unreachable" ? [] // residents not monitored first
      : [...health.problems].sort((a, b) => (b.level === "down") - (a.level === "down"));
    const parts = problems.map(problemText);
    el.innerHTML = `<strong>${esc(t(partial ? "mon_partial" : "mon_" + level))}</strong>` +
      (parts.length ? ` <span>${parts.join("; ")}</span>` : "");
  }
  async function checkHealth() {
    try { health = await api("/api/health"); } catch (e) { if (e.status !== 401) health = "unreachable"; }
    paintHealth();
  }
  function watchHealth(header) {
    const el = document.createElement("div");
    el.id = "cw-health";
    el.setAttribute("role", "alert");
    el.hidden = true;
    header.append(el);
    window.addEventListener("cw-lang", paintHealth);
    checkHealth();
    setInterval(checkHealth, HEALTH_MS);
  }

  async function init(active) {
    header(active);
    watchHealth(document.querySelector("header.top"));
    applyI18n();
    me = await api("/api/me");
    syncClock(me.now);
    if (health) paintHealth(); // painted before: its times now in the deployment's zone
    if (me.features && me.features.routines) { // tasks and reports exist only with routines
      document.querySelectorAll("header nav a[data-routines]").forEach((a) => { a.hidden = false; });
    }
    const u = document.getElementById("cw-user");
    const paint = () => { // the name once when it is the tier's own (区级救助服务中心)
      const tier = t("tier_" + me.user.tier), name = String(me.user.name || "").trim();
      u.textContent = !name || name === tier ? tier : `${name} · ${tier}`;
    };
    paint();
    window.addEventListener("cw-lang", paint);
    return me;
  }

  // Cards keyed by id and updated in place (the board, the tasks): a card's form is never
  // rebuilt, so a push, a re-read, a re-sort or the language toggle leaves every open form,
  // its text, the caret and an IME composition alone (rebuilding the list took them away).
  // `key`: the cards' data-* key (e.g. "alertId"); `parts`: a card's selectors but its form.
  const shown = new WeakMap(); // card -> { row, lang } it was built from

  function refreshCard(li, fresh, parts) { // li takes fresh's attributes and parts
    for (const { name } of [...li.attributes]) if (!fresh.hasAttribute(name)) li.removeAttribute(name);
    for (const { name, value } of fresh.attributes) li.setAttribute(name, value);
    for (const sel of parts) {
      const part = li.querySelector(sel), next = fresh.querySelector(sel);
      if (part.outerHTML !== next.outerHTML) part.replaceWith(next); // an unchanged button keeps focus
    }
  }

  function renderCards(list, rows, { idOf, key, card, parts }) {
    const ids = new Set(rows.map(idOf));
    const cards = new Map();
    for (const li of [...list.children]) {
      if (ids.has(li.dataset[key])) cards.set(li.dataset[key], li); else li.remove();
    }
    // a card moved by a re-sort loses the focus held inside it: note it to put it back
    const focused = list.contains(document.activeElement) ? document.activeElement : null;
    // new cards and cards whose row (or the language) changed, built in one parse
    const tpl = document.createElement("template");
    tpl.innerHTML = rows.filter((r) => {
      const s = shown.get(cards.get(idOf(r)));
      return !s || s.row !== r || s.lang !== lang;
    }).map(card).join("");
    const built = new Map([...tpl.content.children].map((li) => [li.dataset[key], li]));
    rows.forEach((r, i) => {
      const fresh = built.get(idOf(r));
      let li = cards.get(idOf(r));
      if (!li) li = fresh; else if (fresh) refreshCard(li, fresh, parts);
      if (fresh) shown.set(li, { row: r, lang });
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    // (a moved textarea keeps its text and caret itself: only the focus needs putting back)
    if (focused && focused.isConnected && document.activeElement !== focused) {
      focused.focus({ preventScroll: true });
    }
  }

  return {
    t, esc, api, errorText, init, applyI18n, setLang, fmtDur, fmt, fmtTime, ago, now, syncClock,
    renderCards,
    get lang() { return lang; }, get me() { return me; },
  };
})();

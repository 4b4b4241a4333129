/* Times on the charts (uPlot's time axis and legend) in the UI's language and the
   deployment's time zone: zh "11月29日 14:00", en "29 Nov 14:00"; 24-hour clock in both. */
"use strict";
const CWChartTime = (() => {
  const formats = new Map(); // Intl formatters by language, time zone and kind
  const KINDS = {
    day: { month: "short", day: "numeric" }, // zh-CN: 11月29日, en-GB: 29 Nov
    time: { hour: "2-digit", minute: "2-digit", hourCycle: "h23" },
    seconds: { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" },
  };

  function format(kind, ts) {
    const timeZone = (CW.me && CW.me.timezone) || undefined;
    const key = `${CW.lang}|${timeZone}|${kind}`;
    if (!formats.has(key)) {
      formats.set(key, new Intl.DateTimeFormat(CW.lang === "zh" ? "zh-CN" : "en-GB",
        { ...KINDS[kind], timeZone }));
    }
    return formats.get(key).format(new Date(ts * 1000));
  }

  const full = (ts) => `${format("day", ts)} ${format("time", ts)}`;

  // axis ticks (epoch seconds, `incr` apart): the time, and under it the date on the first
  // tick and wherever the day changes; only the date when ticks are a day or more apart
  function axisValues(u, splits, axisIdx, space, incr) {
    let prev = null;
    return splits.map((ts) => {
      if (ts === null || ts === undefined) return null;
      const day = format("day", ts);
      const time = format(incr < 60 ? "seconds" : "time", ts);
      const label = incr >= 86400 ? day : day !== prev ? `${time}\n${day}` : time;
      prev = day;
      return label;
    });
  }

  // the legend's time (the cursor's minute)
  const legendValue = (u, ts) => (ts === null || ts === undefined ? "--" : full(ts));

  return { full, axisValues, legendValue };
})();

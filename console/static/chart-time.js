/* Times on the charts (uPlot's time axis and legend) in the UI's language and the
   deployment's time zone: zh "11月29日 14:00", en "29 Nov 14:00"; 24-hour clock in both
   (the formatters are common.js's `CW.fmt`, shared with every other time on the pages). */
"use strict";
const CWChartTime = (() => {
  const full = (ts) => `${CW.fmt("day", ts)} ${CW.fmt("time", ts)}`;

  // axis ticks (epoch seconds, `incr` apart): the time, and under it the date on the first
  // tick and wherever the day changes; only the date when ticks are a day or more apart
  function axisValues(u, splits, axisIdx, space, incr) {
    let prev = null;
    return splits.map((ts) => {
      if (ts === null || ts === undefined) return null;
      const day = CW.fmt("day", ts);
      const time = CW.fmt(incr < 60 ? "seconds" : "time", ts);
      const label = incr >= 86400 ? day : day !== prev ? `${time}\n${day}` : time;
      prev = day;
      return label;
    });
  }

  // the legend's time (the cursor's minute)
  const legendValue = (u, ts) => (ts === null || ts === undefined ? "--" : full(ts));

  return { full, axisValues, legendValue };
})();

// The indicators' plots (issue 30): uPlot, vendored. The data is the page's JSON block
// (#plots); each .chart[data-figure] gets its plot and, once drawn, data-points = the
// number of values drawn (what the browser tests check). No inline script (CSP).
(function () {
  "use strict";
  var COLOURS = ["#0b4f9c", "#c2410c", "#15803d", "#7e22ce", "#be123c", "#0e7490",
                 "#a16207", "#4d7c0f", "#6b7280"];

  function timeData(plot) {
    var xs = plot.x.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
    return [xs].concat(plot.lines.map(function (l) { return l.values; }));
  }

  function barData(plot) {
    var xs = plot.x.map(function (_, i) { return i; });
    return [xs].concat(plot.lines.map(function (l) { return l.values; }));
  }

  function draw(el, plot) {
    var width = Math.max(320, el.clientWidth || 560);
    var bars = plot.kind === "bars";
    var series = [{}].concat(plot.lines.map(function (l, i) {
      var s = {label: l.label, stroke: COLOURS[i % COLOURS.length], width: 2};
      if (bars && !l.line) {
        s.fill = COLOURS[i % COLOURS.length] + "99";
        s.paths = uPlot.paths.bars({size: [0.7 / plot.lines.length, 60],
                                    align: 0, gap: 2});
        s.points = {show: false};
      }
      if (l.line) { s.dash = [6, 4]; s.points = {show: false}; }
      return s;
    }));
    var opts = {width: width, height: 240, series: series,
                scales: {x: {time: !bars, range: bars ? function () {
                  return [-0.6, plot.x.length - 0.4]; } : undefined}},
                axes: [{values: bars ? function (u, splits) {
                  return splits.map(function (v) {
                    return Number.isInteger(v) && plot.x[v] !== undefined ? plot.x[v] : "";
                  }); } : undefined},
                       {label: plot.percent ? "%" : ""}]};
    var data = bars ? barData(plot) : timeData(plot);
    new uPlot(opts, data, el);
    var points = 0;
    plot.lines.forEach(function (l) {
      l.values.forEach(function (v) { if (v !== null && v !== undefined) { points++; } });
    });
    el.setAttribute("data-points", String(points));
  }

  function start() {
    var block = document.getElementById("plots");
    if (!block || typeof uPlot === "undefined") { return; }
    var plots = JSON.parse(block.textContent);
    document.querySelectorAll(".chart[data-figure]").forEach(function (el) {
      var plot = plots[el.getAttribute("data-figure")];
      if (plot) { draw(el, plot); }
    });
    document.body.setAttribute("data-plots-ready", "1");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());

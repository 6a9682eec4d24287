// Charts drawn by uPlot (vendor/, loaded by index.html as the global ``uPlot``).
//
// A chart is made on its first update, once its element is in the page and has a width. Each
// chart's element carries data-points and data-last (the newest value of its first series):
// what a person reads off the line, and what the browser test waits for.

const uPlot = window.uPlot;
const COLORS = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#64748b"];
const live = new Set();
// Counts and rates are never negative: start every y axis at 0, with room above the top.
const FROM_ZERO = { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] };
// A sparkline dips a little below 0, so a line at 0 is not hidden by the cell's bottom edge.
const SPARK_RANGE = { range: (u, min, max) => (max > 0 ? [-max * 0.08, max * 1.1] : [-0.08, 1]) };

window.addEventListener("resize", () => {
  for (const chart of live) chart.resize();
});

/** A tiny line without axes or legend, for a table cell. */
export function sparkline(name) {
  return makeChart(name, (width) => ({
    width, height: 28,
    cursor: { show: false }, legend: { show: false }, select: { show: false },
    scales: { x: { time: false }, y: SPARK_RANGE },
    axes: [{ show: false }, { show: false }],
    series: [{}, {
      stroke: COLORS[0], width: 1.5, fill: "rgba(37, 99, 235, 0.12)", points: { show: false },
    }],
  }), 120);
}

/** A time chart with a title and a legend; ``lines`` are [{label}], one per data column. */
export function timeChart(name, title, lines) {
  const chart = makeChart(name, (width) => ({
    width, height: 200,
    scales: { x: { time: true }, y: FROM_ZERO },
    axes: [{}, { size: 56 }],
    legend: { live: false }, // names and colours only: "--" for every value until a hover
    series: [{}, ...lines.map((line, i) => ({
      label: line.label, stroke: COLORS[i % COLORS.length], width: 2,
    }))],
  }));
  chart.el.prepend(Object.assign(document.createElement("h3"), { textContent: title }));
  chart.el.classList.add("chart", "card");
  return chart;
}

function makeChart(name, options, fixedWidth) {
  const el = document.createElement("div");
  el.dataset.chart = name;
  const plotArea = document.createElement("div");
  el.append(plotArea);
  let plot = null;
  const width = () => fixedWidth ?? Math.max(200, plotArea.clientWidth || el.clientWidth - 24);
  const chart = {
    el,
    update(data) {
      if (!plot) {
        if (!el.isConnected) return;
        plot = new uPlot(options(width()), data, plotArea);
        live.add(chart);
      } else {
        plot.setData(data);
      }
      const xs = data[0];
      el.dataset.points = String(xs.length);
      el.dataset.last = xs.length ? String(data[1][xs.length - 1] ?? "") : "";
    },
    resize() {
      if (plot && !fixedWidth) plot.setSize({ width: width(), height: plot.height });
    },
    destroy() {
      live.delete(chart);
      if (plot) plot.destroy();
      plot = null;
    },
  };
  return chart;
}

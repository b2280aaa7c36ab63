// Small inline SVG charts: a line over time buckets, and horizontal bars.

import { h, svg } from "./dom.js";

const WIDTH = 420;
const HEIGHT = 120;
const PAD = { left: 48, right: 8, top: 8, bottom: 22 };

// points: [{x: time, y: number|null}], with gaps where y is null. The x axis is labelled
// at its ends: the first point's x, and `xEnd` (the end of the last bucket) or, without
// it, the last point's x.
export function lineChart(points, { formatY, formatX, xEnd = null, yMax = null, label }) {
  const values = points.map((p) => p.y).filter((y) => y !== null);
  const top = yMax ?? Math.max(1, ...values);
  const innerWidth = WIDTH - PAD.left - PAD.right;
  const innerHeight = HEIGHT - PAD.top - PAD.bottom;
  const xOf = (index) => PAD.left + (points.length > 1 ? (index / (points.length - 1)) * innerWidth : innerWidth / 2);
  const yOf = (value) => PAD.top + innerHeight - (value / top) * innerHeight;
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label },
    svg("line", { class: "axis", x1: PAD.left, y1: PAD.top + innerHeight, x2: WIDTH - PAD.right, y2: PAD.top + innerHeight }),
    svg("text", { class: "tick", x: PAD.left - 4, y: PAD.top + 8, "text-anchor": "end", text: formatY(top) }),
    svg("text", { class: "tick", x: PAD.left - 4, y: PAD.top + innerHeight, "text-anchor": "end", text: formatY(0) }));
  if (points.length) {
    chart.append(
      svg("text", { class: "tick", x: PAD.left, y: HEIGHT - 6, text: formatX(points[0].x) }),
      svg("text", { class: "tick", x: WIDTH - PAD.right, y: HEIGHT - 6, "text-anchor": "end", text: formatX(xEnd ?? points[points.length - 1].x) }));
  }
  let path = "";
  points.forEach((point, index) => {
    if (point.y === null) return;
    const previous = points[index - 1];
    path += `${previous && previous.y !== null ? "L" : "M"}${xOf(index).toFixed(1)},${yOf(point.y).toFixed(1)} `;
  });
  if (path) chart.append(svg("path", { class: "series", d: path }));
  points.forEach((point, index) => {
    if (point.y !== null) {
      chart.append(svg("circle", { class: "dot", cx: xOf(index), cy: yOf(point.y), r: 2.5 },
        svg("title", { text: `${formatX(point.x)}: ${formatY(point.y)}` })));
    }
  });
  return chart;
}

// rows: [{label, value, className}]
export function barChart(rows, { formatValue }) {
  const max = Math.max(1, ...rows.map((row) => row.value));
  return h("div", { class: "bars" }, rows.map((row) => {
    const bar = svg("svg", { class: "bar", viewBox: "0 0 100 10", preserveAspectRatio: "none" },
      svg("rect", { class: row.className, x: 0, y: 0, height: 10, width: (row.value / max) * 100 }));
    return h("div", { class: "bar-row" }, h("span", { class: "bar-label", text: row.label }), bar,
      h("span", { class: "bar-value", text: formatValue(row.value) }));
  }));
}

// The job graph of a run as SVG: a column per depth (a job sits one column right of
// the deepest job it needs), edges from each needed job to the job that needs it.

import { svg } from "./dom.js";
import { stateLabel, t } from "./i18n.js";

const WIDTH = 150;
const HEIGHT = 44;
const COLUMN_GAP = 60;
const ROW_GAP = 16;
const MARGIN = 8;

export function layout(jobs) {
  const byId = new Map(jobs.map((job) => [job.id, job]));
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id)) return 0; // a cycle cannot pass the parser; guard anyway
    visiting.add(id);
    const needs = (byId.get(id)?.needs || []).filter((need) => byId.has(need));
    const value = needs.length ? 1 + Math.max(...needs.map(depthOf)) : 0;
    visiting.delete(id);
    depth.set(id, value);
    return value;
  };
  const columns = [];
  for (const job of jobs) {
    const column = depthOf(job.id);
    (columns[column] ||= []).push(job.id);
  }
  const position = new Map();
  columns.forEach((ids, column) => ids.forEach((id, row) => position.set(id, {
    x: MARGIN + column * (WIDTH + COLUMN_GAP), y: MARGIN + row * (HEIGHT + ROW_GAP),
  })));
  const rows = Math.max(1, ...columns.map((ids) => ids?.length || 0));
  return {
    position,
    width: MARGIN * 2 + columns.length * WIDTH + Math.max(0, columns.length - 1) * COLUMN_GAP,
    height: MARGIN * 2 + rows * HEIGHT + (rows - 1) * ROW_GAP,
  };
}

// Draw the graph. Each job's node is a button: a click, Enter or Space calls
// onSelect(jobId). The graph is a labelled group, not an image, so assistive
// technology reaches the buttons inside it.
export function drawDag(jobs, onSelect) {
  const { position, width, height } = layout(jobs);
  const graph = svg("svg", { class: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "group", "aria-label": t("run.graph") },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", class: "dag-arrow" }))));
  for (const job of jobs) {
    const to = position.get(job.id);
    for (const need of job.needs || []) {
      const from = position.get(need);
      if (!from) continue;
      const x1 = from.x + WIDTH;
      const y1 = from.y + HEIGHT / 2;
      const x2 = to.x;
      const y2 = to.y + HEIGHT / 2;
      const bend = (x2 - x1) / 2;
      graph.append(svg("path", { class: "dag-edge", d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" }));
    }
  }
  for (const job of jobs) {
    const { x, y } = position.get(job.id);
    const label = job.id.length > 18 ? `${job.id.slice(0, 17)}…` : job.id;
    const name = t("run.graphNode", { job: job.id, state: stateLabel(job.state, "job") });
    graph.append(svg("g", {
      class: `dag-node state-${job.state}`, transform: `translate(${x},${y})`, "data-job": job.id,
      "data-state": job.state, "data-focus": `dag/${job.id}`, tabindex: 0, role: "button", "aria-label": name,
      onclick: () => onSelect(job.id),
      onkeydown: (event) => {
        if (event.key !== "Enter" && event.key !== " ") return;
        event.preventDefault(); // Space would scroll the page
        onSelect(job.id);
      },
    },
    svg("title", { text: name }),
    svg("rect", { width: WIDTH, height: HEIGHT, rx: 6 }),
    svg("text", { x: 10, y: 18, class: "dag-name", text: label }),
    svg("text", { x: 10, y: 35, class: "dag-state", text: stateLabel(job.state, "job") })));
  }
  return graph;
}

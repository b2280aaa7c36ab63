// The runs list: live through a "runs" subscription, filtered by state, pipeline, ref
// and tenant (kept in the URL), with the counts per state.

import { clear, h } from "./dom.js";
import { formatDateTime, formatDuration, formatNumber, stateLabel, t, tPlural, triggerLabel } from "./i18n.js";

export const STATES = ["pending", "scheduled", "running", "succeeded", "failed", "timed_out", "cancelled", "skipped"];
const LIMIT = 100;

// A state as a coloured label; `subject` is "run" or "job" (for jobs and steps), see stateLabel.
export function stateBadge(state, subject = "run") {
  return h("span", { class: `state state-${state}`, dataset: { state }, text: stateLabel(state, subject) });
}

export function runDuration(run, now = Date.now()) {
  if (run.duration_ms !== null && run.duration_ms !== undefined) return run.duration_ms;
  if (run.started_at && !run.finished_at) return now - run.started_at;
  return null;
}

export class RunsView {
  constructor(container, connection, params) {
    this.container = container;
    this.connection = connection;
    this.filter = {
      state: params.query.get("state") || "",
      pipeline: params.query.get("pipeline") || "",
      ref: params.query.get("ref") || "",
      tenant: params.query.get("tenant") || "",
    };
    this.runs = new Map();
    this.counts = {};
    this.eventId = null;
    this.root = h("section", { class: "runs-view" });
    container.append(this.root);
    this.render();
    this.unsubscribe = connection.subscribe({
      topic: "runs",
      params: () => ({ filter: this.filter, limit: LIMIT, after: this.eventId }),
      onMessage: (message) => this.receive(message),
    });
    this.timer = setInterval(() => this.renderRows(), 1000);
  }

  receive(message) {
    if (message.type === "runs_snapshot") {
      this.runs = new Map(message.runs.map((run) => [run.id, run]));
    } else if (message.type === "runs_changed") {
      for (const id of message.removed) this.runs.delete(id);
      for (const run of message.runs) this.runs.set(run.id, run);
    } else if (message.type === "error") {
      this.error = message.message;
    }
    if (message.counts) this.counts = message.counts;
    if (message.event_id !== undefined) this.eventId = message.event_id;
    // seq orders runs as the server accepted them; client-chosen ids do not sort by time.
    const sorted = [...this.runs.values()].sort((a, b) => b.seq - a.seq).slice(0, LIMIT);
    this.runs = new Map(sorted.map((run) => [run.id, run]));
    this.renderCounts();
    this.renderRows();
  }

  applyFilter(filter) {
    const query = new URLSearchParams(Object.entries(filter).filter(([, value]) => value));
    location.hash = `#/runs${query.toString() ? `?${query}` : ""}`;
  }

  render() {
    clear(this.root);
    const field = (name, label) => h("label", {}, h("span", { text: label }),
      h("input", { name, value: this.filter[name], "data-filter": name, autocomplete: "off" }));
    const stateSelect = h("select", { name: "state", "data-filter": "state" },
      h("option", { value: "", text: t("state.all") }),
      STATES.map((state) => h("option", { value: state, text: stateLabel(state), selected: state === this.filter.state })));
    const form = h("form", {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(form);
        this.applyFilter(Object.fromEntries(["state", "pipeline", "ref", "tenant"].map((k) => [k, String(data.get(k) || "").trim()])));
      },
    },
    h("label", {}, h("span", { text: t("runs.state") }), stateSelect),
    field("pipeline", t("runs.pipeline")), field("ref", t("runs.ref")), field("tenant", t("runs.tenant")),
    h("button", { type: "submit", text: t("runs.filter") }),
    h("button", { type: "button", text: t("runs.clear"), onclick: () => this.applyFilter({}) }));
    this.countsElement = h("div", { class: "counts" });
    this.tbody = h("tbody");
    this.root.append(
      h("h1", { text: t("runs.title") }), form, this.countsElement,
      h("table", { class: "runs" },
        h("thead", {}, h("tr", {}, [
          t("runs.number"), t("runs.state"), t("runs.pipeline"), t("runs.source"), t("runs.trigger"),
          t("runs.duration"), t("runs.started"),
        ].map((label) => h("th", { text: label })))),
        this.tbody));
    this.renderCounts();
    this.renderRows();
  }

  renderCounts() {
    const total = Object.values(this.counts).reduce((sum, count) => sum + count, 0);
    clear(this.countsElement).append(
      h("span", { class: "total", text: tPlural("runs.total", total, { count: formatNumber(total) }) }),
      ...STATES.filter((state) => this.counts[state]).map((state) => h("a", {
        class: `count state-${state}`, href: `#/runs?state=${state}`, dataset: { state },
      }, stateLabel(state), " ", h("b", { text: formatNumber(this.counts[state]) }))));
  }

  renderRows() {
    const now = Date.now();
    const rows = [...this.runs.values()].map((run) => h("tr", { dataset: { run: run.id, state: run.state } },
      h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(run.id)}`, text: `#${run.number}` })),
      h("td", {}, stateBadge(run.state)),
      h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(run.id)}`, text: run.pipeline })),
      h("td", { class: "source", title: run.source }, run.source, run.ref ? h("span", { class: "ref", text: `@${run.ref}` }) : null),
      h("td", { text: triggerLabel(run.trigger) }),
      h("td", { class: "number", text: formatDuration(runDuration(run, now)) }),
      h("td", { text: run.started_at ? formatDateTime(run.started_at) : t("runs.notStarted") })));
    clear(this.tbody).append(...rows);
    if (!rows.length) this.tbody.append(h("tr", {}, h("td", { colspan: 7, class: "empty", text: this.error || t("runs.empty") })));
  }

  relabel() {
    this.render();
  }

  destroy() {
    this.unsubscribe();
    clearInterval(this.timer);
  }
}

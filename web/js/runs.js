// The runs list: live through a "runs" subscription, filtered by state, pipeline, ref
// and tenant (kept in the URL), with the counts per state. The subscription sends the
// newest LIMIT runs. "Show older runs" reads the next pages over HTTP.

import { getJson } from "./api.js";
import { clear, h, keepFocus } from "./dom.js";
import { formatDateTime, formatDuration, formatNumber, stateLabel, t, tPlural, triggerLabel } from "./i18n.js";

export const STATES = ["pending", "scheduled", "running", "succeeded", "failed", "timed_out", "cancelled", "skipped"];
const LIMIT = 100; // runs per page, live or older
const FILTERS = ["state", "pipeline", "ref", "tenant"];

// The route of the runs list with `filter`, leaving out its empty fields.
export function runsHash(filter) {
  const query = new URLSearchParams(FILTERS.filter((name) => filter[name]).map((name) => [name, filter[name]]));
  return `#/runs${query.toString() ? `?${query}` : ""}`;
}

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
    this.filter = Object.fromEntries(FILTERS.map((name) => [name, params.query.get(name) || ""]));
    this.runs = new Map(); // the live page: the newest LIMIT runs
    // Runs older than the live page: the pages read by "Show older runs", and runs that
    // new runs pushed out of the live page after that.
    this.older = new Map();
    this.olderEnd = false; // the last page read had no next page
    this.loadingOlder = false;
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
    // Only the durations of running runs change from second to second. They are updated
    // in place, so focus and text selections stay.
    this.timer = setInterval(() => this.tick(), 1000);
  }

  receive(message) {
    if (message.type === "runs_snapshot") {
      this.runs = new Map(message.runs.map((run) => [run.id, run]));
    } else if (message.type === "runs_changed") {
      for (const id of message.removed) {
        this.runs.delete(id);
        this.older.delete(id);
      }
      for (const run of message.runs) this.runs.set(run.id, run);
    } else if (message.type === "error") {
      this.error = message.message;
    }
    if (message.counts) this.counts = message.counts;
    if (message.event_id !== undefined) this.eventId = message.event_id;
    // seq orders runs as the server accepted them. Ids chosen by clients do not sort by time.
    const sorted = [...this.runs.values()].sort((a, b) => b.seq - a.seq);
    this.runs = new Map(sorted.slice(0, LIMIT).map((run) => [run.id, run]));
    for (const run of this.runs.values()) this.older.delete(run.id);
    // With older pages shown, a run that leaves the live page moves to them, so the list
    // has no hole, and a change to a run among them updates it. The server reports
    // changes to any matching run, so runs older than every page read are left out.
    if (this.older.size) {
      const oldest = [...this.older.values()].reduce((low, run) => Math.min(low, run.seq), Infinity);
      for (const run of sorted.slice(LIMIT)) if (run.seq >= oldest) this.older.set(run.id, run);
    }
    this.renderCounts();
    this.renderRows();
  }

  // The live page and the older runs, newest first.
  shownRuns() {
    return [...this.runs.values(), ...this.older.values()].sort((a, b) => b.seq - a.seq);
  }

  // Read the page of runs older than the oldest one shown and add it to the list.
  async loadOlder() {
    const listed = this.shownRuns();
    if (this.loadingOlder || !listed.length) return;
    this.loadingOlder = true;
    this.renderMore();
    const query = new URLSearchParams(FILTERS.filter((name) => this.filter[name]).map((name) => [name, this.filter[name]]));
    query.set("cursor", listed[listed.length - 1].id);
    query.set("limit", String(LIMIT));
    try {
      const page = await getJson(`/api/v1/console/runs?${query}`);
      for (const run of page.items) if (!this.runs.has(run.id)) this.older.set(run.id, run);
      this.olderEnd = !page.next_cursor;
      this.moreError = "";
    } catch (error) {
      this.moreError = t("error.request", { message: error.message });
    }
    this.loadingOlder = false;
    const hadFocus = document.activeElement === this.moreButton;
    this.renderRows();
    // The button goes when nothing older is left: keep keyboard focus in the list.
    if (hadFocus && this.moreButton.hidden) {
      this.tbody.querySelector(`tr[data-run="${CSS.escape(listed[listed.length - 1].id)}"] + tr a`)?.focus();
    }
  }

  applyFilter(filter) {
    location.hash = runsHash(filter);
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
        this.applyFilter(Object.fromEntries(FILTERS.map((k) => [k, String(data.get(k) || "").trim()])));
      },
    },
    h("label", {}, h("span", { text: t("runs.state") }), stateSelect),
    field("pipeline", t("runs.pipeline")), field("ref", t("runs.ref")), field("tenant", t("runs.tenant")),
    h("button", { type: "submit", text: t("runs.filter") }),
    h("button", { type: "button", text: t("runs.clear"), onclick: () => this.applyFilter({}) }));
    this.countsElement = h("div", { class: "counts" });
    this.tbody = h("tbody");
    this.moreButton = h("button", { type: "button", id: "runs-more", hidden: true, text: t("runs.more"), onclick: () => this.loadOlder() });
    this.moreStatus = h("span", { class: "notice", id: "runs-more-error", hidden: true });
    this.root.append(
      h("h1", { text: t("runs.title") }), form, this.countsElement,
      h("table", { class: "runs" },
        h("thead", {}, h("tr", {}, [
          t("runs.number"), t("runs.state"), t("runs.pipeline"), t("runs.source"), t("runs.trigger"),
          t("runs.duration"), t("runs.started"),
        ].map((label) => h("th", { text: label })))),
        this.tbody),
      h("div", { class: "more" }, this.moreButton, this.moreStatus));
    this.renderCounts();
    this.renderRows();
  }

  renderCounts() {
    const total = Object.values(this.counts).reduce((sum, count) => sum + count, 0);
    clear(this.countsElement).append(
      h("span", { class: "total", text: tPlural("runs.total", total, { count: formatNumber(total) }) }),
      ...STATES.filter((state) => this.counts[state]).map((state) => h("a", {
        class: `count state-${state}`, href: runsHash({ ...this.filter, state }), dataset: { state },
      }, stateLabel(state), " ", h("b", { text: formatNumber(this.counts[state]) }))));
  }

  renderRows() {
    const now = Date.now();
    const runs = this.shownRuns();
    keepFocus(this.tbody, () => {
      const rows = runs.map((run) => {
        const running = (run.duration_ms === null || run.duration_ms === undefined) && run.started_at && !run.finished_at;
        return h("tr", { dataset: { run: run.id, state: run.state } },
          h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(run.id)}`, dataset: { focus: `number/${run.id}` },
                               text: t("runs.numberValue", { number: run.number }) })),
          h("td", {}, stateBadge(run.state)),
          h("td", { class: "pipeline" }, h("a", { href: `#/runs/${encodeURIComponent(run.id)}`, dataset: { focus: `pipeline/${run.id}` }, text: run.pipeline })),
          h("td", { class: "source", title: run.source }, run.source, run.ref ? h("span", { class: "ref", text: `@${run.ref}` }) : null),
          h("td", { text: triggerLabel(run.trigger) }),
          h("td", { class: "number", dataset: running ? { started: run.started_at } : null, text: formatDuration(runDuration(run, now)) }),
          h("td", { text: run.started_at ? formatDateTime(run.started_at) : t("runs.notStarted") }));
      });
      clear(this.tbody).append(...rows);
      if (!rows.length) this.tbody.append(h("tr", {}, h("td", { colspan: 7, class: "empty", text: this.error || t("runs.empty") })));
    });
    this.renderMore();
  }

  // Show "Show older runs" while the counts report more matching runs than are shown.
  renderMore() {
    const matching = this.filter.state
      ? this.counts[this.filter.state] || 0
      : Object.values(this.counts).reduce((sum, count) => sum + count, 0);
    this.moreButton.hidden = this.olderEnd || this.runs.size + this.older.size >= matching;
    // aria-busy, not disabled: a disabled button would lose keyboard focus.
    this.moreButton.setAttribute("aria-busy", String(this.loadingOlder));
    this.moreStatus.hidden = !this.moreError;
    this.moreStatus.textContent = this.moreError || "";
  }

  tick() {
    const now = Date.now();
    for (const cell of this.tbody.querySelectorAll("[data-started]")) {
      cell.textContent = formatDuration(now - Number(cell.dataset.started));
    }
  }

  relabel() {
    this.render();
  }

  destroy() {
    this.unsubscribe();
    clearInterval(this.timer);
  }
}

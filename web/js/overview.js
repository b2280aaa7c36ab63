// The overview: queue depth, runs per state, and p95 duration and success rate per
// time bucket, read from /api/v1/console/overview every few seconds.

import { getJson } from "./api.js";
import { barChart, lineChart } from "./charts.js";
import { clear, h } from "./dom.js";
import { formatDay, formatDayTime, formatDuration, formatNumber, formatPercent, stateLabel, t } from "./i18n.js";
import { STATES } from "./runs.js";

const REFRESH_MS = 5000;
const WINDOWS = ["24h", "7d", "30d"];
const DAY_MS = 86400000;

export class OverviewView {
  constructor(container) {
    this.window = "24h";
    this.data = null;
    this.error = "";
    this.root = h("section", { class: "overview-view" });
    container.append(this.root);
    this.render();
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  async refresh() {
    try {
      this.data = await getJson(`/api/v1/console/overview?window=${this.window}`);
      this.error = "";
    } catch (error) {
      this.error = t("error.request", { message: error.message });
    }
    this.renderData();
  }

  // The heading and the Window menu stay in the page between refreshes, so the menu
  // keeps keyboard focus. They are built again only when the language changes.
  render() {
    const windowSelect = h("select", { id: "overview-window", onchange: () => { this.window = windowSelect.value; this.refresh(); } },
      WINDOWS.map((name) => h("option", { value: name, selected: name === this.window, text: t(`overview.window.${name}`) })));
    this.content = h("div", { class: "overview-data" });
    clear(this.root).append(h("h1", { text: t("overview.title") }),
      h("label", {}, h("span", { text: `${t("overview.window")} ` }), windowSelect), this.content);
    this.renderData();
  }

  renderData() {
    const data = this.data;
    clear(this.content);
    if (this.error) this.content.append(h("p", { class: "notice", text: this.error }));
    if (!data) return;
    // Hourly and 6-hour buckets span more than one date, so their labels carry the date too.
    const formatX = data.bucket_ms >= DAY_MS ? formatDay : formatDayTime;
    const end = data.buckets.length ? data.buckets[data.buckets.length - 1].start + data.bucket_ms : null;
    const p95 = data.buckets.map((bucket) => ({ x: bucket.start, y: bucket.p95_duration_ms }));
    const success = data.buckets.map((bucket) => ({ x: bucket.start, y: bucket.success_rate }));
    this.content.append(
      h("div", { class: "cards" },
        h("div", { class: "card", id: "queued-runs" }, h("b", { text: formatNumber(data.queued_runs) }), h("span", { text: t("overview.queuedRuns") })),
        h("div", { class: "card", id: "queued-jobs" }, h("b", { text: formatNumber(data.queued_jobs) }), h("span", { text: t("overview.queuedJobs") }))),
      h("h2", { text: t("overview.perState") }),
      barChart(STATES.map((state) => ({ label: stateLabel(state), value: data.counts[state] || 0, className: `state-${state}` })),
        { formatValue: (value) => formatNumber(value) }),
      h("div", { class: "charts" },
        h("figure", {}, h("figcaption", { text: t("overview.p95") }),
          lineChart(p95, { formatY: formatDuration, formatX, xEnd: end, label: t("overview.p95") })),
        h("figure", {}, h("figcaption", { text: t("overview.success") }),
          lineChart(success, { formatY: formatPercent, formatX, xEnd: end, yMax: 1, label: t("overview.success") }))));
  }

  relabel() {
    this.render();
  }

  destroy() {
    clearInterval(this.timer);
  }
}

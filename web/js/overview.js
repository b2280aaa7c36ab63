// The overview: queue depth, runs per state, and p95 duration and success rate per
// time bucket, read from /api/v1/console/overview every few seconds.

import { getJson } from "./api.js";
import { barChart, lineChart } from "./charts.js";
import { clear, h } from "./dom.js";
import { formatDay, formatDuration, formatNumber, formatPercent, formatTime, stateLabel, t } from "./i18n.js";
import { STATES } from "./runs.js";

const REFRESH_MS = 5000;
const WINDOWS = ["24h", "7d", "30d"];

export class OverviewView {
  constructor(container) {
    this.window = "24h";
    this.data = null;
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
    this.render();
  }

  render() {
    const data = this.data;
    const windowSelect = h("select", { id: "overview-window", onchange: () => { this.window = windowSelect.value; this.refresh(); } },
      WINDOWS.map((name) => h("option", { value: name, selected: name === this.window, text: t(`overview.window.${name}`) })));
    clear(this.root).append(h("h1", { text: t("overview.title") }),
      h("label", {}, h("span", { text: `${t("overview.window")} ` }), windowSelect));
    if (this.error) this.root.append(h("p", { class: "notice", text: this.error }));
    if (!data) return;
    const formatX = data.bucket_ms >= 86400000 ? formatDay : formatTime;
    const p95 = data.buckets.map((bucket) => ({ x: bucket.start, y: bucket.p95_duration_ms }));
    const success = data.buckets.map((bucket) => ({ x: bucket.start, y: bucket.success_rate }));
    this.root.append(
      h("div", { class: "cards" },
        h("div", { class: "card", id: "queued-runs" }, h("b", { text: formatNumber(data.queued_runs) }), h("span", { text: t("overview.queuedRuns") })),
        h("div", { class: "card", id: "queued-jobs" }, h("b", { text: formatNumber(data.queued_jobs) }), h("span", { text: t("overview.queuedJobs") }))),
      h("h2", { text: t("overview.perState") }),
      barChart(STATES.map((state) => ({ label: stateLabel(state), value: data.counts[state] || 0, className: `state-${state}` })),
        { formatValue: (value) => formatNumber(value) }),
      h("div", { class: "charts" },
        h("figure", {}, h("figcaption", { text: t("overview.p95") }),
          lineChart(p95, { formatY: formatDuration, formatX, label: t("overview.p95") })),
        h("figure", {}, h("figcaption", { text: t("overview.success") }),
          lineChart(success, { formatY: formatPercent, formatX, yMax: 1, label: t("overview.success") }))));
  }

  relabel() {
    this.render();
  }

  destroy() {
    clearInterval(this.timer);
  }
}

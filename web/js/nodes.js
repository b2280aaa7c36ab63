// The nodes: capacity, allocation, running jobs, breaker state and labels, live
// through a "nodes" subscription.

import { clear, h } from "./dom.js";
import { formatBytes, formatNumber, t } from "./i18n.js";

function cores(millis) {
  return formatNumber(millis / 1000, { maximumFractionDigits: 2 });
}

function usage(allocated, capacity, format) {
  const fraction = capacity ? Math.min(1, allocated / capacity) : 0;
  const bar = h("meter", { min: 0, max: 1, value: fraction, high: 0.9 });
  return h("div", { class: "usage" }, bar, h("span", { text: t("nodes.allocated", { allocated: format(allocated), capacity: format(capacity) }) }));
}

export class NodesView {
  constructor(container, connection) {
    this.nodes = [];
    this.root = h("section", { class: "nodes-view" });
    container.append(this.root);
    this.render();
    this.unsubscribe = connection.subscribe({
      topic: "nodes",
      params: () => ({}),
      onMessage: (message) => {
        if (message.type === "nodes") this.nodes = message.nodes;
        else if (message.type === "error") this.error = message.message;
        this.render();
      },
    });
  }

  render() {
    clear(this.root).append(h("h1", { text: t("nodes.title") }));
    if (this.error) this.root.append(h("p", { class: "notice", text: this.error }));
    const headers = ["nodes.name", "nodes.state", "nodes.breaker", "nodes.cpu", "nodes.memory", "nodes.running", "nodes.labels"];
    const rows = this.nodes.map((node) => h("tr", { dataset: { node: node.name, state: node.state } },
      h("td", {}, h("b", { text: node.name }), h("div", { class: "meta", text: `${node.kind} · ${node.address}` }),
        node.message ? h("div", { class: "reason", text: node.message }) : null),
      h("td", {}, h("span", { class: `state node-${node.state}`, text: t(`node.${node.state}`) }),
        // A flag only where the state does not already say it (a lost node still cordoned).
        node.cordoned && node.state !== "cordoned" && !node.draining ? h("span", { class: "flag", text: t("nodes.cordoned") }) : null,
        node.draining && !["draining", "drained"].includes(node.state) ? h("span", { class: "flag", text: t("nodes.draining") }) : null),
      h("td", {}, h("span", { class: `breaker breaker-${node.breaker}`, text: t(`breaker.${node.breaker}`) })),
      h("td", {}, usage(node.allocated_cpu_millis, node.cpu_millis, cores),
        node.reserved_cpu_millis ? h("div", { class: "meta", text: t("nodes.reserved", { reserved: cores(node.reserved_cpu_millis) }) }) : null),
      h("td", {}, usage(node.allocated_memory_bytes, node.memory_bytes, formatBytes),
        node.reserved_memory_bytes ? h("div", { class: "meta", text: t("nodes.reserved", { reserved: formatBytes(node.reserved_memory_bytes) }) }) : null),
      h("td", {}, h("b", { text: formatNumber(node.running_jobs) }),
        h("ul", { class: "job-list" }, (node.jobs || []).map((job) => {
          const [runId, jobId] = job.split("/");
          return h("li", {}, h("a", { href: `#/runs/${encodeURIComponent(runId)}`, text: `${runId} / ${jobId}` }));
        }))),
      h("td", {}, Object.entries(node.labels || {}).map(([key, value]) => h("span", { class: "label", text: `${key}=${value}` })))));
    this.root.append(h("table", { class: "nodes" },
      h("thead", {}, h("tr", {}, headers.map((key) => h("th", { text: t(key) })))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "empty", text: t("nodes.empty") })))));
  }

  relabel() {
    this.render();
  }

  destroy() {
    this.unsubscribe();
  }
}

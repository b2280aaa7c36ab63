// A run: header, actions (cancel, retry), the job graph and each job's steps, live
// through a "run" subscription.

import { postJson, runPath } from "./api.js";
import { drawDag } from "./dag.js";
import { clear, confirmAction, h, keepFocus } from "./dom.js";
import { formatBytes, formatDateTime, formatDuration, reasonLabel, t, triggerLabel } from "./i18n.js";
import { stateBadge } from "./runs.js";

const ACTIVE = new Set(["pending", "scheduled", "running"]);
const ENDED_UNSUCCESSFULLY = new Set(["failed", "timed_out", "cancelled", "skipped"]);
// Reason codes that only repeat the state they come with.
const REASON_OF_STATE = { cancelled: "cancelled", timed_out: "timeout" };

// Notices for run pages not open yet, by run id. Retry sets one before it moves to the
// new run, and the new run's view shows it.
const pendingNotices = new Map();

// The reason and message of a run, job or step, leaving out a reason that only repeats its state.
function reasonText(item) {
  const parts = [];
  if (item.reason && REASON_OF_STATE[item.state] !== item.reason) parts.push(reasonLabel(item.reason));
  if (item.message) parts.push(item.message);
  return parts.join(": ");
}

function elapsed(item, now) {
  if (item.duration_ms !== null && item.duration_ms !== undefined) return item.duration_ms;
  if (item.started_at && !item.finished_at) return now - Date.parse(item.started_at);
  return null;
}

// Attributes of an element that shows how long `item` took. While the item runs, its
// start time goes into data-started, so RunView.tick() can update the text in place.
function durationAttributes(item, now) {
  const running = (item.duration_ms === null || item.duration_ms === undefined) && item.started_at && !item.finished_at;
  return { text: formatDuration(elapsed(item, now)), dataset: running ? { started: Date.parse(item.started_at) } : null };
}

// Scroll to a job's box and focus it, for a click or a key on its node in the graph.
function showJob(jobId) {
  const article = document.getElementById(`job-${jobId}`);
  article?.scrollIntoView();
  article?.focus({ preventScroll: true });
}

export class RunView {
  constructor(container, connection, params) {
    this.runId = params.runId;
    this.eventId = null;
    this.run = null;
    this.notice = pendingNotices.get(this.runId) ?? "";
    this.cancelling = null; // { job: null or a job id } from the last cancel, until it ends
    pendingNotices.delete(this.runId);
    this.root = h("section", { class: "run-view" });
    container.append(this.root);
    this.render();
    this.unsubscribe = connection.subscribe({
      topic: "run",
      params: () => ({ run_id: this.runId, after: this.eventId }),
      onMessage: (message) => {
        if (message.type === "run") {
          this.run = message.run;
          this.eventId = message.event_id;
          if (this.cancelling && this.cancelEnded()) {
            // "cancelling: ..." described the wait; the run or job has ended now.
            this.notice = "";
            this.cancelling = null;
          }
        } else if (message.type === "error") {
          this.notice = message.code === "NOT-FOUND" ? t("run.notFound", { id: this.runId }) : message.message;
        }
        this.render();
      },
    });
    // Only the durations change from second to second: they are updated in place, so
    // focus and text selections stay.
    this.timer = setInterval(() => {
      if (this.run && ACTIVE.has(this.run.state)) this.tick();
    }, 1000);
  }

  async act(action) {
    try {
      this.notice = await action();
    } catch (error) {
      this.notice = t("error.request", { message: error.message });
    }
    this.render();
  }

  async cancelRun() {
    if (!(await confirmAction(t("run.cancelConfirm", { id: this.runId }), t("run.cancel")))) return;
    this.cancelling = { job: null };
    await this.act(async () => (await postJson(`${runPath(this.runId)}/cancel`)).message);
  }

  async cancelJob(jobId) {
    if (!(await confirmAction(t("run.cancelJobConfirm", { id: this.runId, job: jobId }), t("run.cancelJob")))) return;
    this.cancelling = { job: jobId };
    await this.act(async () => (await postJson(`${runPath(this.runId)}/jobs/${encodeURIComponent(jobId)}/cancel`)).message);
  }

  // Whether what the last cancel asked for has ended: the run, or the one job.
  cancelEnded() {
    if (!this.run) return false;
    if (this.cancelling.job === null) return !ACTIVE.has(this.run.state);
    const job = (this.run.jobs || []).find((item) => item.id === this.cancelling.job);
    return !job || !ACTIVE.has(job.state);
  }

  async retry() {
    await this.act(async () => {
      const result = await postJson(`${runPath(this.runId)}/retry`);
      const notice = t("run.retried", { number: result.run.number, original: this.run.number });
      pendingNotices.set(result.run.id, notice);
      location.hash = `#/runs/${encodeURIComponent(result.run.id)}`;
      return notice;
    });
  }

  tick() {
    const now = Date.now();
    for (const element of this.root.querySelectorAll("[data-started]")) {
      element.textContent = formatDuration(now - Number(element.dataset.started));
    }
  }

  render() {
    keepFocus(this.root, () => this.draw());
  }

  draw() {
    const run = this.run;
    clear(this.root);
    if (!run) {
      this.root.append(h("p", { class: "notice", text: this.notice || "…" }));
      return;
    }
    const now = Date.now();
    const active = ACTIVE.has(run.state);
    const reason = reasonText(run);
    this.root.append(
      h("header", { class: "run-header" },
        h("h1", {}, t("run.title", { pipeline: run.pipeline, number: run.number }), " ", stateBadge(run.state)),
        h("dl", { class: "facts" },
          h("dt", { text: t("runs.source") }), h("dd", { text: run.source }),
          h("dt", { text: t("runs.trigger") }), h("dd", { text: triggerLabel(run.trigger) }),
          h("dt", { text: t("run.tenant") }), h("dd", { text: run.tenant_id }),
          h("dt", { text: t("runs.created") }), h("dd", { text: formatDateTime(Date.parse(run.created_at)) }),
          run.started_at ? [h("dt", { text: t("runs.started") }), h("dd", { text: formatDateTime(Date.parse(run.started_at)) })] : null,
          h("dt", { text: t("runs.duration") }), h("dd", { class: "run-duration", ...durationAttributes(run, now) }),
          reason ? [h("dt", { text: t("run.reason") }), h("dd", { class: "reason", text: reason })] : null),
        h("div", { class: "actions" },
          h("button", { class: "danger", id: "cancel-run", disabled: !active, text: t("run.cancel"), onclick: () => this.cancelRun() }),
          h("button", { id: "retry-run", disabled: active, text: t("run.retry"), onclick: () => this.retry() })),
        this.notice ? h("p", { class: "notice", text: this.notice }) : null),
      h("h2", { text: t("run.graph") }),
      h("div", { class: "dag-box" }, drawDag(run.jobs, showJob)),
      h("h2", { text: t("run.jobs") }),
      ...run.jobs.map((job) => this.renderJob(job, now)));
  }

  renderJob(job, now) {
    const active = ACTIVE.has(job.state);
    const waitReason = job.wait_reason ? t("run.waiting", { reason: t(`wait.${job.wait_reason}`) }) : "";
    const reason = ENDED_UNSUCCESSFULLY.has(job.state) ? reasonText(job) : "";
    const failure = reason ? t(`job.${job.state}`, { reason }) : "";
    const duration = elapsed(job, now);
    return h("article", { class: "job", id: `job-${job.id}`, tabindex: -1, dataset: { job: job.id, state: job.state } },
      h("header", {},
        h("h3", {}, job.id, " ", stateBadge(job.state, "job")),
        h("span", { class: "meta" }, `${t("run.image")}: `, h("code", { text: job.image }),
          job.node ? ` · ${t("run.node")}: ${job.node}` : "",
          job.attempt > 1 ? ` · ${t("run.attempt", { attempt: job.attempt })}` : "",
          job.needs.length ? ` · ${t("run.needs")}: ${job.needs.join(", ")}` : "",
          duration !== null ? [" · ", h("span", { class: "duration", ...durationAttributes(job, now) })] : ""),
        active ? h("button", { class: "danger small", "data-cancel-job": job.id, dataset: { focus: `cancel/${job.id}` },
                               text: t("run.cancelJob"), onclick: () => this.cancelJob(job.id) }) : null),
      job.state === "pending" && waitReason ? h("p", { class: "wait-reason", text: waitReason }) : null,
      failure ? h("p", { class: "failure-reason", text: failure }) : null,
      h("table", { class: "steps" },
        h("thead", {}, h("tr", {}, [t("run.step"), t("runs.state"), t("run.exitCode"), t("runs.duration"), t("run.logSize"), ""]
          .map((label) => h("th", { text: label })))),
        h("tbody", {}, job.steps.map((step) => this.renderStep(job, step, now)))));
  }

  renderStep(job, step, now) {
    const reason = step.state !== "succeeded" ? reasonText(step) : "";
    return h("tr", { dataset: { step: step.index, state: step.state } },
      h("td", { class: "step-name" }, `${step.index}. `, step.name),
      h("td", {}, stateBadge(step.state, "job"), reason ? h("span", { class: "reason", text: ` ${reason}` }) : null),
      h("td", { class: "number exit-code", text: step.exit_code ?? "" }),
      h("td", { class: "number", ...durationAttributes(step, now) }),
      h("td", { class: "number", text: formatBytes(step.log_size) }),
      h("td", {}, h("a", { class: "log-link", href: `#/runs/${encodeURIComponent(this.runId)}/jobs/${encodeURIComponent(job.id)}/steps/${step.index}`,
                           dataset: { focus: `log/${job.id}/${step.index}` }, text: t("run.log") })));
  }

  relabel() {
    this.render();
  }

  destroy() {
    this.unsubscribe();
    clearInterval(this.timer);
  }
}

// A step's log: the first screen from one HTTP read of the start, the rest read by
// byte ranges in the background, then the live tail over the WebSocket from the
// offset reached. Only the lines in view (plus a margin) are in the page, so a
// million-line log scrolls as fast as a short one.

import { readLog, stepLogPath } from "./api.js";
import { PLAIN, plainText, renderLine, styleAfter } from "./ansi.js";
import { clear, h } from "./dom.js";
import { formatBytes, formatNumber, t, tPlural } from "./i18n.js";
import { LogStore } from "./logstore.js";

const LINE_HEIGHT = 18; // pixels; style.css sets the same on .log-line
// NOTE: Chromium caps an element's height at 33,554,428 px (measured in Chromium 156),
// so scrolling reaches only about the first 1,864,000 lines of a longer log.
const OVERSCAN = 30; // lines rendered above and below the view
// NOTE: colours set more than this many lines above the first line shown and still in
// effect there are not applied to it; a terminal would keep them.
const STYLE_LOOKBACK = 200;
const FIRST_READ = 256 * 1024;
const RANGE_READ = 4 * 1024 * 1024;
const SEARCH_LIMIT = 100000; // matches kept per search

function segmentElement(segment) {
  const { style } = segment;
  const span = document.createElement("span");
  span.textContent = segment.text;
  let { fg, bg } = style;
  if (style.inverse) [fg, bg] = [bg ?? "inverse-fg", fg ?? "inverse-bg"];
  const classes = [];
  if (typeof fg === "number") classes.push(`fg${fg}`);
  else if (fg === "inverse-fg") classes.push("fg-inverse");
  else if (fg) span.style.color = fg;
  if (typeof bg === "number") classes.push(`bg${bg}`);
  else if (bg === "inverse-bg") classes.push("bg-inverse");
  else if (bg) span.style.backgroundColor = bg;
  if (style.bold) classes.push("sgr-bold");
  if (style.dim) classes.push("sgr-dim");
  if (style.italic) classes.push("sgr-italic");
  if (style.underline) classes.push("sgr-underline");
  if (style.strike) classes.push("sgr-strike");
  if (classes.length) span.className = classes.join(" ");
  return span;
}

// The position of the first value >= `value` in an ascending array (binary search).
function firstAtOrAfter(sorted, value) {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (sorted[middle] < value) low = middle + 1;
    else high = middle;
  }
  return low;
}

export class LogView {
  constructor(container, connection, params) {
    this.connection = connection;
    this.runId = params.runId;
    this.jobId = params.jobId;
    this.step = params.step;
    this.store = new LogStore();
    this.size = 0;
    this.complete = false;
    this.follow = params.line === null;
    this.targetLine = params.line;
    this.matches = [];
    this.matchIndex = -1;
    this.programmaticScroll = false;
    this.renderQueued = false;
    this.unsubscribe = null;
    this.destroyed = false;
    this.build(container);
    this.load();
  }

  get base() {
    return `#/runs/${encodeURIComponent(this.runId)}/jobs/${encodeURIComponent(this.jobId)}/steps/${encodeURIComponent(this.step)}`;
  }

  build(container) {
    this.followBox = h("input", { type: "checkbox", id: "log-follow", checked: this.follow,
      onchange: () => this.setFollow(this.followBox.checked) });
    this.searchInput = h("input", { type: "search", id: "log-search", placeholder: t("log.searchPlaceholder"), autocomplete: "off",
      onkeydown: (event) => {
        if (event.key === "Enter") {
          event.preventDefault();
          if (this.searchInput.value !== this.lastQuery) this.search();
          else this.nextMatch(event.shiftKey ? -1 : 1);
        }
      } });
    this.matchLabel = h("span", { class: "matches", id: "log-matches" });
    this.status = h("span", { class: "log-status", id: "log-status" });
    this.rows = h("div", { class: "log-rows" });
    this.spacer = h("div", { class: "log-spacer" }, this.rows);
    this.viewport = h("div", { class: "log-viewport", id: "log-viewport", tabindex: 0, role: "region",
      "aria-label": t("log.output", { job: this.jobId, step: this.step }), onscroll: () => this.onScroll() }, this.spacer);
    this.title = h("h1", { text: t("log.title", { job: this.jobId, step: this.step }) });
    this.root = h("section", { class: "log-view" },
      h("nav", { class: "crumbs" }, h("a", { href: `#/runs/${encodeURIComponent(this.runId)}`, text: t("log.back") })),
      this.title,
      h("div", { class: "log-toolbar" },
        h("label", { class: "follow" }, this.followBox, h("span", { text: t("log.follow") })),
        h("form", { class: "search", onsubmit: (event) => event.preventDefault() }, this.searchInput,
          h("button", { type: "button", text: t("log.previous"), onclick: () => this.nextMatch(-1) }),
          h("button", { type: "button", id: "log-next", text: t("log.next"), onclick: () => this.nextMatch(1) }),
          this.matchLabel),
        h("a", { class: "button", id: "log-download", href: stepLogPath(this.runId, this.jobId, this.step),
                 download: `${this.runId}-${this.jobId}-${this.step}.log`, text: t("log.download") }),
        this.status),
      this.viewport);
    container.append(this.root);
    this.resizeObserver = new ResizeObserver(() => this.scheduleRender());
    this.resizeObserver.observe(this.viewport);
  }

  async load() {
    try {
      const first = await readLog(this.runId, this.jobId, this.step, 0, FIRST_READ);
      this.accept(first);
      this.renderNow();
      this.viewport.dataset.firstScreen = String(performance.now());
      while (!this.destroyed && this.store.serverEnd < this.size) {
        this.accept(await readLog(this.runId, this.jobId, this.step, this.store.serverEnd, RANGE_READ));
        this.scheduleRender();
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    } catch (error) {
      this.error = t("error.request", { message: error.message });
      this.updateStatus();
      if (error.status !== 404) setTimeout(() => !this.destroyed && this.load(), 2000);
      return;
    }
    this.viewport.dataset.loaded = "true";
    if (this.destroyed) return;
    if (!this.complete) this.subscribe();
    this.scheduleRender();
  }

  accept(slice) {
    this.size = Math.max(this.size, slice.size);
    // After append(), serverEnd has also moved past any bytes dropped before slice.offset.
    this.append(slice.offset, slice.data);
    this.complete = slice.complete && this.store.serverEnd >= slice.size;
  }

  append(offset, data) {
    this.store.append(offset, data, (count) => tPlural("log.dropped", count, { bytes: formatNumber(count) }));
  }

  subscribe() {
    this.unsubscribe = this.connection.subscribe({
      topic: "log",
      params: () => ({ run_id: this.runId, job_id: this.jobId, step: String(this.step), offset: this.store.serverEnd }),
      onLog: (header, data) => {
        this.size = Math.max(this.size, header.size);
        this.append(header.offset, data);
        this.scheduleRender();
      },
      onResync: () => {
        this.notice = t("error.resync");
        this.updateStatus();
      },
      onMessage: (message) => {
        if (message.type === "log_end") {
          this.complete = true;
          this.size = message.size;
          this.notice = "";
        } else if (message.type === "error") {
          this.notice = t("error.subscription", { message: message.message });
        }
        this.scheduleRender();
      },
    });
  }

  setFollow(on) {
    this.follow = on;
    this.followBox.checked = on;
    if (on) this.scheduleRender();
  }

  onScroll() {
    if (this.programmaticScroll) {
      this.programmaticScroll = false;
    } else if (this.follow) {
      const bottom = this.viewport.scrollHeight - this.viewport.clientHeight;
      if (this.viewport.scrollTop < bottom - LINE_HEIGHT) this.setFollow(false);
    }
    this.scheduleRender();
  }

  scheduleRender() {
    if (this.renderQueued || this.destroyed) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.renderNow();
    });
  }

  scrollToLine(index) {
    const top = Math.max(0, index * LINE_HEIGHT - this.viewport.clientHeight / 3);
    this.programmaticScroll = this.viewport.scrollTop !== top;
    this.viewport.scrollTop = top;
  }

  renderNow() {
    if (this.destroyed) return;
    const total = this.store.visibleLines;
    this.spacer.style.height = `${total * LINE_HEIGHT}px`;
    if (this.targetLine !== null && this.targetLine <= total) {
      this.scrollToLine(this.targetLine - 1);
      this.highlightLine = this.targetLine - 1;
      this.targetLine = null;
    } else if (this.follow) {
      const bottom = Math.max(0, this.viewport.scrollHeight - this.viewport.clientHeight);
      if (this.viewport.scrollTop !== bottom) {
        this.programmaticScroll = true;
        this.viewport.scrollTop = bottom;
      }
    }
    const first = Math.max(0, Math.floor(this.viewport.scrollTop / LINE_HEIGHT) - OVERSCAN);
    const last = Math.min(total, first + Math.ceil(this.viewport.clientHeight / LINE_HEIGHT) + 2 * OVERSCAN);
    let style = PLAIN;
    for (let index = Math.max(0, first - STYLE_LOOKBACK); index < first; index += 1) {
      if (this.store.lineHasEscape(index)) style = styleAfter(this.store.lineText(index), style);
    }
    const current = this.matches[this.matchIndex];
    let nextHit = firstAtOrAfter(this.matches, first);
    const fragment = document.createDocumentFragment();
    for (let index = first; index < last; index += 1) {
      const rendered = renderLine(this.store.lineText(index), style);
      style = rendered.style;
      let className = "log-line";
      if (this.matches[nextHit] === index) {
        className += " hit";
        nextHit += 1;
      }
      if (index === current) className += " current";
      if (index === this.highlightLine) className += " target";
      const number = index + 1;
      fragment.append(h("div", { class: className, id: `L${number}`, dataset: { line: number } },
        h("a", { class: "ln", href: `${this.base}/L${number}`, text: number }),
        h("span", { class: "text" }, rendered.segments.map(segmentElement))));
    }
    this.rows.style.transform = `translateY(${first * LINE_HEIGHT}px)`;
    this.rows.replaceChildren(fragment);
    this.updateStatus();
  }

  updateStatus() {
    const parts = [];
    if (this.store.serverEnd < this.size && !this.viewport.dataset.loaded) {
      parts.push(t("log.loading", { loaded: formatBytes(this.store.serverEnd), size: formatBytes(this.size) }));
    } else {
      parts.push(tPlural("log.lines", this.store.visibleLines, { count: formatNumber(this.store.visibleLines) }), formatBytes(this.size));
    }
    parts.push(this.complete ? t("log.ended") : t("log.running"));
    if (this.notice) parts.push(this.notice);
    if (this.error) parts.push(this.error);
    this.status.textContent = parts.join(" · ");
    this.status.dataset.complete = String(this.complete);
  }

  search() {
    this.lastQuery = this.searchInput.value;
    // One match more than the limit shows whether the search stopped early.
    this.matches = this.store.search(this.lastQuery, SEARCH_LIMIT + 1, plainText);
    this.matchesLimited = this.matches.length > SEARCH_LIMIT;
    if (this.matchesLimited) this.matches.pop();
    const top = Math.floor(this.viewport.scrollTop / LINE_HEIGHT);
    this.matchIndex = this.matches.findIndex((line) => line >= top);
    if (this.matchIndex === -1 && this.matches.length) this.matchIndex = 0;
    this.showMatch();
  }

  nextMatch(step) {
    if (!this.matches.length) return;
    this.matchIndex = (this.matchIndex + step + this.matches.length) % this.matches.length;
    this.showMatch();
  }

  showMatch() {
    if (this.matches.length) {
      this.setFollow(false);
      this.scrollToLine(this.matches[this.matchIndex]);
      const counts = { current: formatNumber(this.matchIndex + 1), total: formatNumber(this.matches.length) };
      this.matchLabel.textContent = t(this.matchesLimited ? "log.matchesLimit" : "log.matches", counts);
    } else {
      this.matchLabel.textContent = this.lastQuery ? t("log.noMatches") : "";
    }
    this.renderNow();
  }

  update(params) {
    if (params.line !== null) {
      this.setFollow(false);
      this.targetLine = params.line;
      this.scheduleRender();
    }
  }

  relabel() {
    const scroll = this.viewport.scrollTop;
    const container = this.root.parentElement;
    this.root.remove();
    this.resizeObserver.disconnect();
    const query = this.searchInput.value;
    this.build(container);
    this.searchInput.value = query;
    this.viewport.dataset.loaded = "true";
    this.programmaticScroll = true;
    this.renderNow();
    this.viewport.scrollTop = scroll;
  }

  destroy() {
    this.destroyed = true;
    this.resizeObserver.disconnect();
    this.unsubscribe?.();
    clear(this.root);
  }
}

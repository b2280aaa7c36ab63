// Start-up and the router. Routes live in the URL's hash, so the server serves one page:
//   #/runs?state=&pipeline=&ref=&tenant=   the runs list
//   #/runs/ID                              a run
//   #/runs/ID/jobs/JOB/steps/STEP[/LN]     a step's log, optionally at line N
//   #/new  #/nodes  #/overview

import { Connection } from "./connection.js";
import { clear, h } from "./dom.js";
import { currentLanguage, onLanguageChange, setLanguage, t, translatePage } from "./i18n.js";
import { LogView } from "./logview.js";
import { NewRunView } from "./newrun.js";
import { NodesView } from "./nodes.js";
import { OverviewView } from "./overview.js";
import { RunView } from "./run.js";
import { RunsView } from "./runs.js";

const connection = new Connection();
const container = document.getElementById("view");
let current = null; // {key, view}

// The page for an address that cannot be decoded, such as "%" without two hex digits.
class InvalidRouteView {
  constructor(container, connection, params) {
    this.address = params.address;
    this.root = h("section", { class: "invalid-view" });
    container.append(this.root);
    this.relabel();
  }

  relabel() {
    clear(this.root).append(
      h("h1", { text: t("route.invalid") }),
      h("p", { class: "notice", text: t("route.invalidAddress", { address: this.address }) }),
      h("a", { href: "#/runs", text: t("route.toRuns") }));
  }

  destroy() {}
}

// Split the hash into the route. The hash keeps its percent-encoding, so each path
// segment is decoded once, on its own ("%2F" in a run id stays in the id), and the query
// is decoded once by URLSearchParams ("%26" in a filter stays in its value).
function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/runs";
  const queryStart = hash.indexOf("?");
  const path = queryStart === -1 ? hash : hash.slice(0, queryStart);
  const query = new URLSearchParams(queryStart === -1 ? "" : hash.slice(queryStart + 1));
  let parts;
  try {
    parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  } catch (error) {
    if (!(error instanceof URIError)) throw error;
    return { name: "invalid", key: `invalid/${hash}`, nav: null, params: { address: `#${hash}` } };
  }
  if (parts[0] === "runs" && parts.length >= 6 && parts[2] === "jobs" && parts[4] === "steps") {
    const line = parts[6] && /^L\d+$/.test(parts[6]) ? Number(parts[6].slice(1)) : null;
    return { name: "log", key: `log/${parts[1]}/${parts[3]}/${parts[5]}`, nav: "runs",
             params: { runId: parts[1], jobId: parts[3], step: parts[5], line } };
  }
  if (parts[0] === "runs" && parts[1]) return { name: "run", key: `run/${parts[1]}`, nav: "runs", params: { runId: parts[1] } };
  if (parts[0] === "new") return { name: "new", key: "new", nav: "new", params: {} };
  if (parts[0] === "nodes") return { name: "nodes", key: "nodes", nav: "nodes", params: {} };
  if (parts[0] === "overview") return { name: "overview", key: "overview", nav: "overview", params: {} };
  return { name: "runs", key: `runs?${query}`, nav: "runs", params: { query } };
}

const VIEWS = {
  runs: RunsView, run: RunView, log: LogView, new: NewRunView, nodes: NodesView, overview: OverviewView,
  invalid: InvalidRouteView,
};

function route() {
  const next = parseRoute();
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === next.nav);
  }
  if (current && current.key === next.key) {
    current.view.update?.(next.params);
    return;
  }
  current?.view.destroy();
  clear(container);
  const view = new VIEWS[next.name](container, connection, next.params);
  current = { key: next.key, view };
}

let countdown = null; // the interval that updates "Reconnecting in N s…"

function showConnection(status) {
  const element = document.getElementById("connection");
  element.dataset.state = status.state;
  clearInterval(countdown);
  if (status.state !== "closed") {
    element.textContent = t(`connection.${status.state}`);
    return;
  }
  const showSeconds = () => {
    const seconds = Math.max(1, Math.ceil((status.retryAt - Date.now()) / 1000));
    element.textContent = t("connection.closed", { seconds });
  };
  showSeconds();
  countdown = setInterval(showSeconds, 1000);
}

function start() {
  translatePage();
  const select = document.getElementById("language");
  select.value = currentLanguage();
  select.addEventListener("change", () => setLanguage(select.value));
  onLanguageChange(() => {
    translatePage();
    select.value = currentLanguage();
    showConnection(connection.status);
    current?.view.relabel?.();
  });
  connection.onStatus(showConnection);
  connection.start();
  window.addEventListener("hashchange", route);
  route();
}

start();

// English and Spanish strings, and locale-aware formats through Intl.
// The language comes from localStorage ("cicd.language") when the user chose one,
// else from navigator.language; Spanish for "es*", English otherwise.

const STRINGS = {
  en: {
    "language": "Language",
    "nav.runs": "Runs", "nav.new": "New run", "nav.nodes": "Nodes", "nav.overview": "Overview",
    "connection.connecting": "Connecting…", "connection.open": "Live",
    "connection.closed": "Reconnecting in {seconds} s…",
    "confirm.no": "Keep", "confirm.yes": "Confirm",
    "state.all": "All states",
    "state.pending": "pending", "state.scheduled": "scheduled", "state.running": "running",
    "state.succeeded": "succeeded", "state.failed": "failed", "state.timed_out": "timed out",
    "state.cancelled": "cancelled", "state.skipped": "skipped",
    "jobState.pending": "pending", "jobState.scheduled": "scheduled", "jobState.running": "running",
    "jobState.succeeded": "succeeded", "jobState.failed": "failed", "jobState.timed_out": "timed out",
    "jobState.cancelled": "cancelled", "jobState.skipped": "skipped",
    "trigger.api": "API", "trigger.cli": "command line", "trigger.console": "console",
    "trigger.retry": "retry",
    "reason.cancelled": "cancelled by a user", "reason.server_shutdown": "the server shut down",
    "reason.interrupted": "interrupted from the command line", "reason.timeout": "timeout expired",
    "reason.exit_code": "non-zero exit code", "reason.OOMKilled": "out of memory",
    "reason.node_lost": "the node was lost", "reason.unschedulable": "no node can run the job",
    "reason.server_restarted": "the server restarted", "reason.abandoned": "abandoned after a restart",
    "reason.image_pull_failed": "the image could not be pulled",
    "reason.engine_unavailable": "the container engine is unavailable",
    "runs.title": "Runs", "runs.filter": "Filter", "runs.clear": "Clear",
    "runs.pipeline": "Pipeline", "runs.ref": "Ref", "runs.tenant": "Tenant",
    "runs.state": "State", "runs.source": "Source", "runs.trigger": "Trigger",
    "runs.duration": "Duration", "runs.started": "Started", "runs.created": "Created",
    "runs.number": "#", "runs.numberValue": "#{number}", "runs.empty": "No runs match.",
    "runs.total.one": "{count} run", "runs.total.other": "{count} runs",
    "runs.more": "Show older runs", "runs.notStarted": "not started",
    "run.title": "Run {pipeline} #{number}", "run.cancel": "Cancel run", "run.retry": "Retry",
    "run.cancelConfirm": "Cancel run {id}? Running steps get SIGTERM, then SIGKILL.",
    "run.cancelJob": "Cancel job", "run.cancelJobConfirm": "Cancel job {job} of run {id}?",
    "run.retried": "Started run #{number} to retry run #{original}.", "run.reason": "Reason",
    "run.jobs": "Jobs",
    "run.graph": "Job graph", "run.graphNode": "Job {job}, {state}", "run.image": "Image", "run.node": "Node", "run.needs": "Needs",
    "run.waiting": "Waiting: {reason}",
    "job.failed": "Failed: {reason}", "job.timed_out": "Timed out: {reason}",
    "job.cancelled": "Cancelled: {reason}", "job.skipped": "Skipped: {reason}",
    "run.attempt": "attempt {attempt}",
    "run.step": "Step", "run.exitCode": "Exit code", "run.log": "Log", "run.logSize": "Output",
    "run.notFound": "Run {id} not found.", "run.tenant": "Tenant", "run.commit": "Commit",
    "wait.capacity": "no node has free capacity", "wait.labels": "no node has the labels",
    "wait.tenant_limit": "the tenant's limit of parallel jobs",
    "wait.node_lost": "its node to come back after it was lost", "wait.node_unavailable":
      "the matching nodes are cordoned or broken", "wait.queue_blocked":
      "an older job is first in the queue", "wait.reserved": "capacity is reserved for another job",
    "log.title": "{job} · step {step}", "log.follow": "Follow", "log.search": "Search",
    "log.searchPlaceholder": "Search the log", "log.next": "Next", "log.previous": "Previous",
    "log.matches": "{current} of {total}", "log.noMatches": "No matches",
    "log.matchesLimit": "{current} of {total}+ (search stopped at the limit)",
    "log.download": "Download raw", "log.loading": "Loading {loaded} of {size}…",
    "log.lines.one": "{count} line", "log.lines.other": "{count} lines", "log.ended": "Step ended", "log.running": "Step running",
    "log.dropped.one": "[{bytes} byte dropped from the middle of this output]",
    "log.dropped.other": "[{bytes} bytes dropped from the middle of this output]",
    "log.back": "Back to the run", "log.output": "Output of {job}, step {step}",
    "new.title": "Start a run", "new.pipelineYaml": "Pipeline (YAML)",
    "new.pipelinePath": "or pipeline file in the source", "new.sourceDir": "Source directory on the server",
    "new.gitUrl": "or git repository URL", "new.ref": "Git ref (branch, tag or commit)",
    "new.tenant": "Tenant", "new.submit": "Start run", "new.needSource":
      "The source is missing: give a source directory on the server or a git repository URL.",
    "new.twoSources": "Give a source directory or a git URL, not both.",
    "nodes.title": "Nodes", "nodes.name": "Node", "nodes.kind": "Kind", "nodes.address": "Address",
    "nodes.state": "State", "nodes.breaker": "Breaker", "nodes.cpu": "CPU", "nodes.memory": "Memory",
    "nodes.running": "Running jobs", "nodes.labels": "Labels", "nodes.allocated":
      "{allocated} of {capacity}", "nodes.reserved": "{reserved} reserved",
    "nodes.cordoned": "cordoned", "nodes.draining": "draining", "nodes.empty": "No nodes.",
    "breaker.closed": "closed", "breaker.open": "open", "breaker.half_open": "half open",
    "node.ready": "ready", "node.unavailable": "unavailable", "node.cordoned": "cordoned",
    "node.draining": "draining", "node.drained": "drained", "node.fencing": "fencing",
    "node.unknown": "unknown",
    "overview.title": "Overview", "overview.queue": "Queue", "overview.queuedRuns":
      "Runs waiting to start", "overview.queuedJobs": "Jobs waiting for a node",
    "overview.perState": "Runs per state", "overview.p95": "p95 run duration",
    "overview.success": "Success rate", "overview.window": "Window",
    "overview.window.24h": "last 24 hours", "overview.window.7d": "last 7 days",
    "overview.window.30d": "last 30 days", "overview.noData": "no runs",
    "error.request": "Request failed: {message}", "error.subscription": "{message}",
    "error.resync": "Fell behind the live output; catching up.",
    "route.invalid": "Invalid address",
    "route.invalidAddress": "The address {address} cannot be decoded: it contains a \"%\" escape that is not valid UTF-8.",
    "route.toRuns": "Go to the runs",
  },
  es: {
    "language": "Idioma",
    "nav.runs": "Ejecuciones", "nav.new": "Nueva ejecución", "nav.nodes": "Nodos",
    "nav.overview": "Resumen",
    "connection.connecting": "Conectando…", "connection.open": "En directo",
    "connection.closed": "Reconectando en {seconds} s…",
    "confirm.no": "Mantener", "confirm.yes": "Confirmar",
    "state.all": "Todos los estados",
    "state.pending": "pendiente", "state.scheduled": "planificada", "state.running": "en curso",
    "state.succeeded": "correcta", "state.failed": "fallida", "state.timed_out": "tiempo agotado",
    "state.cancelled": "cancelada", "state.skipped": "omitida",
    "jobState.pending": "en espera", "jobState.scheduled": "planificado",
    "jobState.running": "en curso", "jobState.succeeded": "correcto", "jobState.failed": "fallido",
    "jobState.timed_out": "tiempo agotado", "jobState.cancelled": "cancelado",
    "jobState.skipped": "omitido",
    "trigger.api": "API", "trigger.cli": "línea de comandos", "trigger.console": "consola",
    "trigger.retry": "reintento",
    "reason.cancelled": "cancelación por un usuario", "reason.server_shutdown": "el servidor se detuvo",
    "reason.interrupted": "interrupción desde la línea de comandos",
    "reason.timeout": "se agotó el tiempo límite", "reason.exit_code": "código de salida distinto de cero",
    "reason.OOMKilled": "memoria agotada", "reason.node_lost": "se perdió el nodo",
    "reason.unschedulable": "ningún nodo puede ejecutar el trabajo",
    "reason.server_restarted": "el servidor se reinició",
    "reason.abandoned": "abandono tras un reinicio",
    "reason.image_pull_failed": "no se pudo descargar la imagen",
    "reason.engine_unavailable": "el motor de contenedores no está disponible",
    "runs.title": "Ejecuciones", "runs.filter": "Filtrar", "runs.clear": "Limpiar",
    "runs.pipeline": "Pipeline", "runs.ref": "Referencia", "runs.tenant": "Inquilino",
    "runs.state": "Estado", "runs.source": "Origen", "runs.trigger": "Disparador",
    "runs.duration": "Duración", "runs.started": "Inicio", "runs.created": "Creada",
    "runs.number": "n.º", "runs.numberValue": "n.º {number}", "runs.empty": "Ninguna ejecución coincide.",
    "runs.total.one": "{count} ejecución", "runs.total.other": "{count} ejecuciones", "runs.more": "Ver ejecuciones anteriores",
    "runs.notStarted": "sin empezar",
    "run.title": "Ejecución {pipeline} n.º {number}", "run.cancel": "Cancelar ejecución",
    "run.retry": "Reintentar",
    "run.cancelConfirm": "¿Cancelar la ejecución {id}? Los pasos en curso reciben SIGTERM y después SIGKILL.",
    "run.cancelJob": "Cancelar trabajo",
    "run.cancelJobConfirm": "¿Cancelar el trabajo {job} de la ejecución {id}?",
    "run.retried": "Se inició la ejecución n.º {number} para reintentar la n.º {original}.", "run.reason": "Motivo", "run.jobs": "Trabajos",
    "run.graph": "Grafo de trabajos", "run.graphNode": "Trabajo {job}, {state}", "run.image": "Imagen",
    "run.node": "Nodo",
    "run.needs": "Depende de", "run.waiting": "En espera: {reason}",
    "run.attempt": "intento {attempt}",
    "job.failed": "Fallido: {reason}", "job.timed_out": "Tiempo agotado: {reason}",
    "job.cancelled": "Cancelado: {reason}", "job.skipped": "Omitido: {reason}",
    "run.step": "Paso", "run.exitCode": "Código de salida",
    "run.log": "Registro", "run.logSize": "Salida", "run.notFound": "No existe la ejecución {id}.",
    "run.tenant": "Inquilino", "run.commit": "Commit",
    "wait.capacity": "ningún nodo tiene capacidad libre",
    "wait.labels": "ningún nodo tiene las etiquetas",
    "wait.tenant_limit": "el límite de trabajos en paralelo del inquilino",
    "wait.node_lost": "que su nodo vuelva tras perderse",
    "wait.node_unavailable": "los nodos adecuados están acordonados o averiados",
    "wait.queue_blocked": "un trabajo más antiguo va primero en la cola",
    "wait.reserved": "la capacidad está reservada para otro trabajo",
    "log.title": "{job} · paso {step}", "log.follow": "Seguir", "log.search": "Buscar",
    "log.searchPlaceholder": "Buscar en el registro", "log.next": "Siguiente",
    "log.previous": "Anterior", "log.matches": "{current} de {total}",
    "log.matchesLimit": "{current} de {total}+ (la búsqueda se detuvo en el límite)",
    "log.noMatches": "Sin coincidencias", "log.download": "Descargar sin procesar",
    "log.loading": "Cargando {loaded} de {size}…", "log.lines.one": "{count} línea",
    "log.lines.other": "{count} líneas",
    "log.ended": "Paso terminado", "log.running": "Paso en curso",
    "log.dropped.one": "[{bytes} byte eliminado del medio de esta salida]",
    "log.dropped.other": "[{bytes} bytes eliminados del medio de esta salida]",
    "log.back": "Volver a la ejecución", "log.output": "Salida de {job}, paso {step}",
    "new.title": "Iniciar una ejecución", "new.pipelineYaml": "Pipeline (YAML)",
    "new.pipelinePath": "o fichero del pipeline en el origen",
    "new.sourceDir": "Directorio de origen en el servidor",
    "new.gitUrl": "o URL del repositorio git", "new.ref": "Referencia git (rama, etiqueta o commit)",
    "new.tenant": "Inquilino", "new.submit": "Iniciar ejecución",
    "new.needSource":
      "Falta el origen: indica un directorio de origen en el servidor o la URL de un repositorio git.",
    "new.twoSources": "Indica un directorio de origen o una URL de git, no ambos.",
    "nodes.title": "Nodos", "nodes.name": "Nodo", "nodes.kind": "Tipo", "nodes.address": "Dirección",
    "nodes.state": "Estado", "nodes.breaker": "Cortacircuitos", "nodes.cpu": "CPU",
    "nodes.memory": "Memoria", "nodes.running": "Trabajos en curso", "nodes.labels": "Etiquetas",
    "nodes.allocated": "{allocated} de {capacity}", "nodes.reserved": "{reserved} reservados",
    "nodes.cordoned": "acordonado", "nodes.draining": "vaciándose", "nodes.empty": "No hay nodos.",
    "breaker.closed": "cerrado", "breaker.open": "abierto", "breaker.half_open": "semiabierto",
    "node.ready": "listo", "node.unavailable": "no disponible", "node.cordoned": "acordonado",
    "node.draining": "vaciándose", "node.drained": "vaciado", "node.fencing": "aislándose",
    "node.unknown": "desconocido",
    "overview.title": "Resumen", "overview.queue": "Cola",
    "overview.queuedRuns": "Ejecuciones esperando para empezar",
    "overview.queuedJobs": "Trabajos esperando un nodo",
    "overview.perState": "Ejecuciones por estado", "overview.p95": "Duración p95 de las ejecuciones",
    "overview.success": "Tasa de éxito", "overview.window": "Periodo",
    "overview.window.24h": "últimas 24 horas", "overview.window.7d": "últimos 7 días",
    "overview.window.30d": "últimos 30 días", "overview.noData": "sin ejecuciones",
    "error.request": "La petición falló: {message}", "error.subscription": "{message}",
    "error.resync": "La vista se quedó atrás de la salida en directo; poniéndose al día.",
    "route.invalid": "Dirección no válida",
    "route.invalidAddress": "No se puede decodificar la dirección {address}: contiene un escape «%» que no es UTF-8 válido.",
    "route.toRuns": "Ir a las ejecuciones",
  },
};

export const LANGUAGES = Object.keys(STRINGS);
const STORAGE_KEY = "cicd.language";

function initialLanguage() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved && STRINGS[saved]) return saved;
  const browser = (navigator.language || "en").toLowerCase();
  return browser.startsWith("es") ? "es" : "en";
}

let language = initialLanguage();
const listeners = new Set();

export function currentLanguage() {
  return language;
}

export function setLanguage(next) {
  if (!STRINGS[next] || next === language) return;
  language = next;
  localStorage.setItem(STORAGE_KEY, next);
  document.documentElement.lang = next;
  for (const listener of listeners) listener(next);
}

export function onLanguageChange(listener) {
  listeners.add(listener);
}

// Translate a key, filling {name} placeholders from params.
export function t(key, params = {}) {
  const text = STRINGS[language][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : `{${name}}`));
}

// Translate a key whose text depends on a number: `KEY.one`, `KEY.many` and so on as
// Intl.PluralRules selects for `count` in the current language, else `KEY.other`.
export function tPlural(key, count, params = {}) {
  const category = new Intl.PluralRules(language).select(count);
  const chosen = Object.hasOwn(STRINGS[language], `${key}.${category}`) ? `${key}.${category}` : `${key}.other`;
  return t(chosen, params);
}

// Translate the static text of the page (elements with data-i18n).
export function translatePage(root = document) {
  document.documentElement.lang = language;
  for (const element of root.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
}

// A state word. Spanish adjectives agree with the noun: `subject` is "run" (ejecución,
// feminine) or "job" for jobs and steps (trabajo, paso, masculine).
export function stateLabel(state, subject = "run") {
  return t(subject === "run" ? `state.${state}` : `jobState.${state}`);
}

// Translate a code from the server's fixed vocabulary (`prefix.code` in STRINGS). Any
// other text, such as a free-text reason or message, is returned unchanged.
function codeLabel(prefix, code) {
  return Object.hasOwn(STRINGS.en, `${prefix}.${code}`) ? t(`${prefix}.${code}`) : code;
}

export function triggerLabel(trigger) {
  return codeLabel("trigger", trigger);
}

export function reasonLabel(reason) {
  return codeLabel("reason", reason);
}

export function formatDateTime(milliseconds) {
  if (milliseconds === null || milliseconds === undefined) return "";
  return new Intl.DateTimeFormat(language, { dateStyle: "medium", timeStyle: "medium" })
    .format(new Date(milliseconds));
}

export function formatDayTime(milliseconds) {
  return new Intl.DateTimeFormat(language, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })
    .format(new Date(milliseconds));
}

export function formatDay(milliseconds) {
  return new Intl.DateTimeFormat(language, { month: "short", day: "numeric" })
    .format(new Date(milliseconds));
}

// A duration in milliseconds as "1 h 2 min 3 s" (or "850 ms"), in the locale's words.
export function formatDuration(milliseconds) {
  if (milliseconds === null || milliseconds === undefined) return "";
  if (milliseconds < 1000) {
    return new Intl.NumberFormat(language, { style: "unit", unit: "millisecond", unitDisplay: "short" })
      .format(Math.round(milliseconds));
  }
  let seconds = Math.round(milliseconds / 1000);
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  seconds %= 60;
  if (typeof Intl.DurationFormat === "function") {
    const parts = {};
    if (hours) parts.hours = hours;
    if (hours || minutes) parts.minutes = minutes;
    parts.seconds = seconds;
    return new Intl.DurationFormat(language, { style: "narrow" }).format(parts);
  }
  const unit = (value, name) =>
    new Intl.NumberFormat(language, { style: "unit", unit: name, unitDisplay: "narrow" }).format(value);
  return [hours && unit(hours, "hour"), (hours || minutes) && unit(minutes, "minute"), unit(seconds, "second")]
    .filter(Boolean).join(" ");
}

export function formatNumber(value, options = {}) {
  return new Intl.NumberFormat(language, options).format(value);
}

export function formatPercent(fraction) {
  return new Intl.NumberFormat(language, { style: "percent", maximumFractionDigits: 0 }).format(fraction);
}

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

// A size in bytes with binary (IEC) units, which read the same in both languages:
// "12 B", "1.5 MiB" ("1,5 MiB" in Spanish).
export function formatBytes(bytes) {
  let value = bytes;
  let index = 0;
  while (value >= 1024 && index < BYTE_UNITS.length - 1) {
    value /= 1024;
    index += 1;
  }
  const number = new Intl.NumberFormat(language, { maximumFractionDigits: index ? 1 : 0 }).format(value);
  return `${number}\u00a0${BYTE_UNITS[index]}`;
}

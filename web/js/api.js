// HTTP calls to the server's API. Errors become ApiError with the server's message.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || "";
  }
}

async function check(response) {
  if (response.ok) return response;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  throw new ApiError(response.status, body);
}

export async function getJson(path) {
  const response = await check(await fetch(path, { headers: { Accept: "application/json" } }));
  return response.json();
}

export async function postJson(path, body = undefined, headers = {}) {
  const init = { method: "POST", headers: { Accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await check(await fetch(path, init));
  return response.json();
}

export function runPath(runId) {
  return `/api/v1/runs/${encodeURIComponent(runId)}`;
}

export function stepLogPath(runId, jobId, step) {
  return `${runPath(runId)}/jobs/${encodeURIComponent(jobId)}/steps/${encodeURIComponent(step)}/log`;
}

// Read stored output from offset through the console's seeking read.
export async function readLog(runId, jobId, step, offset, limit) {
  const path = `/api/v1/console/runs/${encodeURIComponent(runId)}/jobs/${encodeURIComponent(jobId)}`
    + `/steps/${encodeURIComponent(step)}/log?offset=${offset}&limit=${limit}`;
  const response = await check(await fetch(path));
  return {
    offset: Number(response.headers.get("X-Log-Offset")),
    size: Number(response.headers.get("X-Log-Size")),
    complete: response.headers.get("X-Log-Complete") === "true",
    data: new Uint8Array(await response.arrayBuffer()),
  };
}

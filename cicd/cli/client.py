"""The command-line client of a cicd server: submit, runs, show, logs, cancel, retry.

The server's URL comes from ``--server`` or ``CICD_SERVER``. Output is a readable
table by default and the API's JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec

from cicd.errors import CicdError, UsageError
from cicd.orchestration.documents import ActionResult, RunDocument, RunPage

TERMINAL = {"succeeded", "failed", "cancelled"}


class ServerError(CicdError):
    """The server returned an error (its status, code and message are kept)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"server returned {status} {code}: {message}")
        self.code = code
        self.status = status
        self.message = message


def run_path(run_id: str, *segments: str) -> str:
    """Build the API path of a run, or of something under it, with each segment URL-encoded.

    Unencoded, a ``#`` or ``?`` in a reference such as ``hello#1`` would start the URL's
    fragment or query.
    """
    return "/".join(["/runs", *(urllib.parse.quote(part, safe="") for part in (run_id, *segments))])


def server_url(args: argparse.Namespace) -> str | None:
    """Return the server to ask: ``--server``, else ``CICD_SERVER`` unless ``--db``
    names a database file to read instead."""
    if getattr(args, "server", None):
        return str(args.server)
    if getattr(args, "db", None):
        return None
    return os.environ.get("CICD_SERVER") or None


class Client:
    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url + "/api/v1", timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise UsageError(f"cannot reach the cicd server at {self.base_url}: {exc}; start it "
                             "with `cicd serve` or fix --server / CICD_SERVER") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                raise ServerError(response.status_code, body.get("code", "?"),
                                  body.get("message", response.text))
            except ValueError:
                raise ServerError(response.status_code, "HTTP", response.text[:200]) from None
        return response

    def submit(self, body: dict[str, Any], key: str | None) -> RunDocument:
        headers = {"Idempotency-Key": key} if key else {}
        response = self.request("POST", "/runs", json=body, headers=headers)
        return msgspec.json.decode(response.content, type=RunDocument)

    def run(self, run_id: str) -> RunDocument:
        """Fetch the document of the run with exactly this id."""
        return msgspec.json.decode(self.request("GET", run_path(run_id)).content, type=RunDocument)

    def runs(self, limit: int) -> RunPage:
        response = self.request("GET", "/runs", params={"limit": limit})
        return msgspec.json.decode(response.content, type=RunPage)

    def iter_runs(self, **filters: str) -> Iterator[RunDocument]:
        """Yield every run that matches ``filters`` (``tenant``, ``pipeline``...), newest first."""
        params: dict[str, str | int] = {**filters, "limit": 200}
        while True:
            response = self.request("GET", "/runs", params=params)
            page = msgspec.json.decode(response.content, type=RunPage)
            yield from page.items
            if page.next_cursor is None:
                return
            params["cursor"] = page.next_cursor

    def resolve_run(self, ref: str) -> RunDocument:
        """Find the run that ``ref`` names, as ``cicd show --db`` does.

        ``ref`` is a run id, a unique id prefix, ``PIPELINE#NUMBER`` (``#NUMBER``: any
        pipeline) or ``last``. Raises UsageError when no run or several runs match.
        """
        from cicd.cli.history import several_runs_message, split_run_number

        if ref == "last":
            page = self.runs(1)
            if not page.items:
                raise UsageError(f"the server at {self.base_url} has no runs yet")
            return page.items[0]
        if "#" in ref:
            pipeline, number = split_run_number(ref)
            filters = {"pipeline": pipeline} if pipeline else {}
            matches = [run for run in self.iter_runs(**filters) if run.number == number]
        else:
            try:
                return self.run(ref)
            except ServerError as exc:
                if exc.status != 404:
                    raise
            # NOTE: the API has no filter on an id prefix, so this reads every run.
            prefix = ref.upper()
            matches = [run for run in self.iter_runs() if run.id.upper().startswith(prefix)]
        if not matches:
            raise UsageError(f"no run on the server at {self.base_url} matches {ref!r}; "
                             "`cicd runs` lists the runs")
        if len(matches) > 1:
            raise UsageError(several_runs_message(ref, matches))
        return matches[0]

    def action(self, path: str) -> ActionResult:
        return msgspec.json.decode(self.request("POST", path).content, type=ActionResult)

    def follow_log(self, run_id: str, job: str, step: str, out: Any) -> bytes:
        """Write a step's output to ``out`` as it arrives, until the step ends.

        Returns the last byte written, or b"" when the step wrote nothing.
        """
        path = run_path(run_id, "jobs", job, "steps", step, "log")
        offset = 0
        last = b""
        while True:
            try:
                with self.http.stream("GET", path, params={"offset": offset, "follow": 1},
                                      timeout=httpx.Timeout(30.0, read=None)) as response:
                    if response.status_code >= 400:
                        response.read()
                        self.request("GET", path)  # raises the server's error
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        out.flush()
                        offset += len(chunk)
                        if chunk:
                            last = chunk[-1:]
                return last
            except httpx.TransportError:
                # The server restarted or the connection dropped: resume from the offset.
                time.sleep(1.0)


def submit_command(args: argparse.Namespace) -> int:
    url = _require_server(args)
    client = Client(url)
    body: dict[str, Any] = {"tenant": args.tenant}
    if args.priority is not None:
        body["priority"] = args.priority
    is_git = bool(args.source) and ("://" in args.source or args.source.endswith(".git"))
    if is_git:
        body["source"] = {"git": args.source, "ref": args.ref}
    else:
        body["source"] = {"dir": os.path.abspath(args.source or ".")}
    pipeline = Path(args.file)
    if pipeline.is_file():
        body["pipeline_yaml"] = pipeline.read_text(encoding="utf-8")
    else:
        body["pipeline_path"] = args.file
    try:
        document = client.submit(body, args.idempotency_key)
    except ServerError as exc:
        # The server calls the text it parsed "pipeline_yaml", but the user wrote args.file.
        if (exc.code == "PIPELINE-INVALID" and "pipeline_yaml" in body
                and exc.message.startswith("pipeline_yaml:")):
            print(f"cicd: invalid pipeline: {args.file}{exc.message.removeprefix('pipeline_yaml')}",
                  file=sys.stderr)
            return 2
        raise
    print(f"run {document.id} ({document.pipeline}#{document.number}) {document.state}",
          file=sys.stderr)
    return _report(client, document, args)


def _report(client: Client, document: RunDocument, args: argparse.Namespace) -> int:
    """Print the run's id (or document with --json) on stdout; with --wait, wait for its end."""
    if args.wait:
        while document.state not in TERMINAL:
            time.sleep(0.5)
            document = client.run(document.id)
    if args.json:
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
    else:
        print(document.id)
    if args.wait:
        print(f"run {document.id} ended {document.state}", file=sys.stderr)
        return 0 if document.state == "succeeded" else 1
    return 0


def _require_server(args: argparse.Namespace) -> str:
    url = server_url(args)
    if not url:
        raise UsageError("no server: pass --server URL or set CICD_SERVER (for example "
                         "http://127.0.0.1:8470)")
    return url


def cancel_command(args: argparse.Namespace) -> int:
    client = Client(_require_server(args))
    run_id = client.resolve_run(args.run).id
    path = run_path(run_id, "jobs", args.job, "cancel") if args.job else run_path(run_id, "cancel")
    result = client.action(path)
    print(result.message or ("cancelled" if result.changed else "nothing to cancel"))
    return 0


def retry_command(args: argparse.Namespace) -> int:
    client = Client(_require_server(args))
    result = client.action(run_path(client.resolve_run(args.run).id, "retry"))
    print(f"run {result.run.id} ({result.run.pipeline}#{result.run.number}): {result.message}",
          file=sys.stderr)
    return _report(client, result.run, args)


def remote_runs(args: argparse.Namespace, url: str) -> int:
    page = Client(url).runs(args.limit)
    if args.json:
        sys.stdout.write(msgspec.json.encode(page.items).decode() + "\n")
        return 0
    from cicd.cli.history import format_duration_ms

    print(f"{'RUN':<26}  {'PIPELINE':<24} {'STATE':<10} {'STARTED':<19} DURATION")
    for run in page.items:
        # The same columns as the local listing: start time, in local time.
        started = "-"
        if run.started_at:
            started = f"{dt.datetime.fromisoformat(run.started_at).astimezone():%Y-%m-%d %H:%M:%S}"
        print(f"{run.id:<26}  {run.pipeline + '#' + str(run.number):<24} {run.state:<10} "
              f"{started:<19} {format_duration_ms(run.duration_ms)}")
    return 0


def remote_show(args: argparse.Namespace, url: str) -> int:
    document = Client(url).resolve_run(args.run)
    if args.json:
        from cicd.orchestration.documents import encode_document

        sys.stdout.buffer.write(encode_document(document))
        return 0
    from cicd.cli.history import print_document

    print_document(document)
    return 0


def remote_logs(args: argparse.Namespace, url: str) -> int:
    client = Client(url)
    document = _started_run(client, client.resolve_run(args.run), follow=args.follow)
    job_ref, _, step_ref = (args.target or "").partition("/")
    jobs = [job for job in document.jobs if not job_ref or job.id == job_ref]
    if not jobs:
        names = ", ".join(job.id for job in document.jobs) or "none"
        raise UsageError(f"run {document.id} ({document.state}) has no job {job_ref!r}; "
                         f"its jobs are: {names}")
    selected = [(job, step) for job in jobs for step in job.steps
                if not step_ref or step_ref in (step.name, str(step.index))]
    if step_ref and not selected:
        names = ", ".join(f"{s.index} ({s.name})" for s in jobs[0].steps)
        raise UsageError(f"job {jobs[0].id} has no step {step_ref!r}; its steps are: {names}")
    from cicd.cli.history import note_pruned

    note_pruned(document)
    out = sys.stdout.buffer
    last = b"\n"
    for job, step in selected:
        if not step_ref:
            # One step alone gets exactly its bytes. Between steps, a header starts on its
            # own line even when the output before it did not end with a newline.
            if last != b"\n":
                out.write(b"\n")
            out.write(f"==> {job.id}/{step.name} <==\n".encode())
            last = b"\n"
        if args.follow:
            last = client.follow_log(document.id, job.id, str(step.index), out) or last
        else:
            data = client.request(
                "GET", run_path(document.id, "jobs", job.id, "steps", str(step.index), "log")).content
            out.write(data)
            last = data[-1:] or last
    out.flush()
    return 0


def _started_run(client: Client, document: RunDocument, *, follow: bool) -> RunDocument:
    """Return the run once it has started: with ``follow``, poll a pending run until then.

    A run stays pending, with no jobs, until the server starts it. Its jobs are all
    recorded before its state leaves pending.
    """
    if document.state != "pending":
        return document
    if not follow:
        raise UsageError(f"run {document.id} is pending: it has not started, so it has no "
                         "logs yet; add -f to wait for it and follow its output")
    print(f"run {document.id} is pending; waiting for it to start", file=sys.stderr)
    while document.state == "pending":
        time.sleep(0.5)
        document = client.run(document.id)
    return document


def nodes_command(args: argparse.Namespace) -> int:
    """List the server's nodes, or cordon, drain or uncordon one."""
    from cicd.orchestration.documents import NodeInfo

    client = Client(_require_server(args))
    if args.command != "nodes":
        node = msgspec.json.decode(
            client.request("POST", f"/nodes/{urllib.parse.quote(args.name, safe='')}/{args.command}")
            .content, type=NodeInfo)
        jobs = "1 job" if node.running_jobs == 1 else f"{node.running_jobs} jobs"
        print(f"node {node.name}: {node.state} ({jobs} running)")
        return 0
    nodes = msgspec.json.decode(client.request("GET", "/nodes").content, type=list[NodeInfo])
    if args.json:
        sys.stdout.write(msgspec.json.encode(nodes).decode() + "\n")
        return 0
    from cicd.scheduling.cluster import format_bytes, format_cpu

    print(f"{'NODE':<16} {'STATE':<12} {'BREAKER':<10} {'CPU':<14} {'MEMORY':<18} "
          f"{'JOBS':<6} LABELS")
    for node in nodes:
        cpu = f"{format_cpu(node.allocated_cpu_millis)}/{format_cpu(node.cpu_millis)}"
        memory = (f"{format_bytes(node.allocated_memory_bytes)}/"
                  f"{format_bytes(node.memory_bytes)}")
        labels = ",".join(f"{k}={v}" for k, v in sorted(node.labels.items())) or "-"
        print(f"{node.name:<16} {node.state:<12} {node.breaker:<10} {cpu:<14} {memory:<18} "
              f"{node.running_jobs:<6} {labels}")
        if node.message:
            print(f"  {node.message}")
    return 0

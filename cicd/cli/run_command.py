"""``cicd run``: run a pipeline on this machine and record it in the event log."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from cicd.errors import EngineUnavailable, PipelineError, UsageError
from cicd.execution.control import StopRequest
from cicd.execution.output import LivePrinter
from cicd.orchestration.documents import RunDocument, encode_document
from cicd.orchestration.engine import RunEngine, RunRequest, RunSummary
from cicd.orchestration.states import State
from cicd.pipeline import load_pipeline
from cicd.storage import EventStore, default_db_path, open_database
from cicd.storage.queries import run_document
from cicd.workers.base import Provider
from cicd.workers.docker import DockerProvider
from cicd.workers.labels import owner_id

if TYPE_CHECKING:
    from cicd.config import Settings
    from cicd.scheduling.cluster import Cluster

logger = logging.getLogger("cicd.cli")


def run_command(args: argparse.Namespace) -> int:
    source = Path(args.path)
    if not source.is_dir():
        raise UsageError(f"{args.path!r} is not a directory; pass the directory to build")
    pipeline_file = Path(args.file) if args.file else source / ".cicd.yml"
    try:
        pipeline = load_pipeline(pipeline_file)
    except PipelineError as exc:
        print(f"cicd: invalid pipeline: {exc}", file=sys.stderr)
        return 2
    pipeline_yaml = pipeline_file.read_text(encoding="utf-8")
    db_path = Path(args.db) if args.db else default_db_path()
    printer = None if args.quiet else LivePrinter(colour=False if args.no_color else None)
    settings = None
    if args.config:
        from cicd.config import load_settings

        settings = load_settings(args.config)
        if not settings.nodes:
            settings = None  # no [[nodes]]: the local engine, as without --config
        elif args.parallel is not None:
            raise UsageError("--parallel does not apply to the [[nodes]] of --config; set "
                             "max_jobs on each node instead")
    request = RunRequest(pipeline=pipeline, pipeline_yaml=pipeline_yaml, source_dir=str(source),
                         parallel=args.parallel or os.cpu_count() or 1, grace=args.grace,
                         owner=owner_id())
    return trio.run(_run, request, args.executor, db_path, printer, args.report, settings)


async def _choose_provider(executor: str, printer: LivePrinter | None) -> Provider:
    # LocalProvider is imported only where a run uses it, to keep it off the start-up
    # of runs in Docker.
    if executor == "local":
        from cicd.workers.local import LocalProvider

        return LocalProvider()
    provider = DockerProvider()
    try:
        await provider.check()
        return provider
    except EngineUnavailable:
        await provider.aclose()
        if executor == "auto":
            message = (f"cicd: no Docker engine responds at {provider.base_url}; running steps as "
                       "local processes. Install Docker (https://docs.docker.com/engine/install/) "
                       "or run `bash .ci/docker-setup` to run them in containers.")
            print(message, file=sys.stderr)
            from cicd.workers.local import LocalProvider

            return LocalProvider()
        raise


async def _configured_cluster(settings: Settings, request: RunRequest) -> Cluster:
    """Return the nodes of ``settings``, each probed once for its health and capacity."""
    from cicd.server.nodes import build_cluster, probe_node

    cluster = build_cluster(settings, request.owner)
    async with trio.open_nursery() as nursery:
        for node in cluster.nodes.values():
            nursery.start_soon(probe_node, cluster, node, request.owner)
    for node in cluster.nodes.values():
        if not node.takes_work:
            print(f"cicd: node {node.name} is {node.state}: {node.message}", file=sys.stderr)
    if not any(node.takes_work for node in cluster.nodes.values()):
        raise UsageError(f"no node of {len(cluster.nodes)} takes work (see above); start their "
                         "engines or fix the [[nodes]] of the configuration")
    return cluster


async def _run(request: RunRequest, executor: str, db_path: Path, printer: LivePrinter | None,
               report: str | None, settings: Settings | None = None) -> int:
    stop = StopRequest()
    cluster = None
    if settings is not None:
        cluster = await _configured_cluster(settings, request)
        provider = next(node.provider for node in cluster.nodes.values() if node.takes_work)
    else:
        provider = await _choose_provider(executor, printer)
    store = EventStore(db_path)
    try:
        summary, document, interrupted = await _run_and_record(
            request, provider, store, stop, printer, cluster, settings, db_path)
    finally:
        for node_provider in ({provider} if cluster is None else
                              {node.provider for node in cluster.nodes.values()}):
            await node_provider.aclose()

    _print_summary(document, printer)
    if report:
        Path(report).write_bytes(encode_document(document))
    if interrupted:
        return 130
    return 0 if summary.state is State.SUCCEEDED else 1


async def _run_and_record(request: RunRequest, provider: Provider, store: EventStore,
                          stop: StopRequest, printer: LivePrinter | None, cluster: Cluster | None,
                          settings: Settings | None, db_path: Path,
                          ) -> tuple[RunSummary, RunDocument, bool]:
    """Run ``request`` with the event store open and remove what the run left.

    Returns the run's summary, its document and whether a signal interrupted it.
    """
    interrupted = False
    summary: RunSummary | None = None
    providers = [provider] if cluster is None else [
        node.provider for node in cluster.nodes.values()]
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        watcher = trio.CancelScope()

        async def watch_signals() -> None:
            nonlocal interrupted
            with watcher, trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    interrupted = True
                    first = not stop.requested
                    stop.request("interrupted")
                    if first:
                        print(f"\ncicd: {signal.Signals(signum).name}: stopping running steps "
                              f"(SIGTERM, then SIGKILL after {request.grace:g}s); "
                              "interrupt again to kill them now", file=sys.stderr)
                    else:
                        print("cicd: killing running steps now; cleaning up",
                              file=sys.stderr)

        nursery.start_soon(watch_signals)
        try:
            async with trio.open_nursery() as removals:
                # A job's worker removes its containers and volume in this nursery, so
                # the run's end is recorded and its document read while they go. The
                # nursery ends once every removal has ended.
                for node_provider in providers:
                    if isinstance(node_provider, DockerProvider):
                        node_provider.background_removals = removals
                async with trio.open_nursery() as chores:
                    # Housekeeping of earlier runs goes on beside this run: it touches only
                    # the objects and runs of dead processes.
                    chores.start_soon(_clean_earlier_runs, store, provider, db_path)
                    probes = trio.CancelScope()
                    if cluster is not None and settings is not None:
                        # Probes bring lost nodes back, fenced, while the run goes on.
                        from cicd.server.nodes import watch_nodes

                        interval = settings.seconds(settings.scheduling.probe_interval)

                        async def watch(cluster: Cluster = cluster) -> None:
                            with probes:
                                await watch_nodes(cluster, request.owner, interval)

                        chores.start_soon(watch)
                    try:
                        summary = await _execute(store, provider, printer, stop, request,
                                                 cluster, settings)
                    finally:
                        probes.cancel()
                document = await trio.to_thread.run_sync(_load_document, db_path,
                                                         request.run_id)
                await store.close()  # the writer commits what is queued and ends
        finally:
            with trio.CancelScope(shield=True):
                for node_provider in providers:
                    if isinstance(node_provider, DockerProvider):
                        node_provider.background_removals = None
                # Every worker removes what it created; the sweep by label is for when
                # that may not have happened.
                sweep = [provider] if cluster is None else [
                    node.provider for node in cluster.nodes.values() if node.takes_work]
                await _sweep_run_objects(sweep, request.run_id, finished=summary is not None)
        watcher.cancel()
    assert summary is not None  # _execute returned: an exception would have ended this
    return summary, document, interrupted


async def _execute(store: EventStore, provider: Provider, printer: LivePrinter | None,
                   stop: StopRequest, request: RunRequest, cluster: Cluster | None = None,
                   settings: Settings | None = None) -> RunSummary:
    if settings is None:
        engine = RunEngine(store, provider, printer=printer, stop=stop)
    else:
        scheduling = settings.scheduling
        engine = RunEngine(
            store, provider, printer=printer, stop=stop, cluster=cluster,
            default_request=(settings.cpu_millis(scheduling.default_cpu),
                             settings.memory_bytes(scheduling.default_memory)),
            node_lost_after=settings.optional_seconds(scheduling.node_lost_after))
    try:
        return await engine.execute(request)
    finally:
        with trio.CancelScope(shield=True):
            await store.flush()


async def _sweep_run_objects(providers: list[Provider], run_id: str, *, finished: bool) -> None:
    """Remove the run's objects by label where they may remain: on every engine when the
    run did not finish, else on those where a worker's removal failed."""
    for node_provider in providers:
        if isinstance(node_provider, DockerProvider) and (not finished or run_id in node_provider.unclean_runs):
            from cicd.workers.cleanup import remove_run_objects

            with trio.move_on_after(120):
                await remove_run_objects(node_provider, run_id)


async def _clean_earlier_runs(store: EventStore, provider: Provider, db_path: Path) -> None:
    if isinstance(provider, DockerProvider):
        from cicd.workers.cleanup import remove_orphans

        removed = await remove_orphans(provider)
        if removed:
            logger.info("removed %d objects left by earlier runs", removed)
    await _end_abandoned(store, db_path)


async def _end_abandoned(store: EventStore, db_path: Path) -> None:
    from cicd.orchestration.abandoned import end_abandoned_runs

    conn = await trio.to_thread.run_sync(open_database, db_path)
    try:
        await end_abandoned_runs(store, conn)
    finally:
        conn.close()


def _load_document(db_path: Path, run_id: str):  # type: ignore[no-untyped-def]
    conn = open_database(db_path)
    try:
        return run_document(conn, run_id)
    finally:
        conn.close()


def _print_summary(document, printer: LivePrinter | None) -> None:  # type: ignore[no-untyped-def]
    from cicd.cli.history import format_duration_ms

    lines = [(f"run {document.id} ({document.pipeline}#{document.number}): {document.state}"
              f" in {format_duration_ms(document.duration_ms)}")]
    for job in document.jobs:
        detail = f" ({job.reason}{': ' + job.message if job.message else ''})" if job.reason else ""
        lines.append(f"  {job.id:<20} {job.state:<10} {format_duration_ms(job.duration_ms):>8}{detail}")
    print("\n".join(lines), file=sys.stderr)

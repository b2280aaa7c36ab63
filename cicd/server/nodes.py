"""The server's nodes: built from the configuration, probed, fenced after a loss.

Each node is a Docker engine (or the local host with ``runs.executor = local``).
Without ``[[nodes]]`` in the configuration there is one node, the engine of
``docker.host``. A probe task per node requests the engine's health and
capacity every ``scheduling.probe_interval``:

- each probe counts in the node's circuit breaker; an open breaker means the node
  is unavailable, takes no work, and its probes pause until the breaker turns
  half-open;
- a node that stops responding is lost: its running jobs end ``node_lost``;
- a lost node that responds again is fenced before it takes work: this server's
  containers and volumes there are removed, except those of jobs placed there
  now. Only then does it count as back.
"""

from __future__ import annotations

import logging

import trio

from cicd.config import NodeSettings, Settings
from cicd.errors import CicdError
from cicd.scheduling.cluster import Breaker, Cluster, ClusterNode, host_capacity
from cicd.workers.base import Provider
from cicd.workers.docker import DockerProvider
from cicd.workers.local import LocalProvider

logger = logging.getLogger("cicd.server")


def _breaker(settings: Settings) -> Breaker:
    scheduling = settings.scheduling
    return Breaker(error_rate=scheduling.breaker_error_rate, window=scheduling.breaker_window,
                   min_calls=scheduling.breaker_min_calls,
                   open_for=settings.seconds(scheduling.breaker_open_for),
                   clock=trio.current_time)


def _tls(node: NodeSettings) -> object:
    if not (node.tls_ca or node.tls_cert):
        return None
    import docker.tls

    cert = (node.tls_cert, node.tls_key) if node.tls_cert else None
    return docker.tls.TLSConfig(client_cert=cert, ca_cert=node.tls_ca or None,
                                verify=node.tls_verify)


def build_cluster(settings: Settings, owner: str) -> Cluster:
    """Return the cluster the configuration describes; no engine is contacted yet, so
    every node takes work only once its engine responds to a probe (:func:`probe_node`)."""
    scheduling = settings.scheduling
    nodes: list[ClusterNode] = []
    if not settings.nodes:
        provider: Provider
        if settings.runs.executor == "local":
            provider = LocalProvider()
        else:
            provider = DockerProvider(settings.docker.host or None, owner=owner)
        cpu, memory = host_capacity()
        nodes.append(ClusterNode(provider.name, provider, cpu_millis=cpu, memory_bytes=memory,
                                 max_jobs=settings.runs.max_parallel_jobs,
                                 breaker=_breaker(settings), responded=False))
    for node in settings.nodes:
        provider = DockerProvider(node.host, name=node.name, owner=owner, tls=_tls(node))
        cpu = settings.cpu_millis(node.cpu)
        memory = settings.memory_bytes(node.memory)
        nodes.append(ClusterNode(
            node.name, provider, labels=node.labels, cpu_millis=cpu, memory_bytes=memory,
            cpu_override=bool(cpu), memory_override=bool(memory),
            reserved_cpu_millis=settings.cpu_millis(node.reserve_cpu),
            reserved_memory_bytes=settings.memory_bytes(node.reserve_memory),
            max_jobs=node.max_jobs or settings.runs.max_parallel_jobs,
            breaker=_breaker(settings), responded=False))
    pools = {name: (pool.policy or scheduling.policy,
                    scheduling.backfill if pool.backfill is None else pool.backfill)
             for name, pool in scheduling.pools.items()}
    aging_ms = int(settings.seconds(scheduling.aging_interval) * 1000)
    return Cluster(nodes, policy=scheduling.policy, backfill=scheduling.backfill, pools=pools,
                   aging_interval_ms=aging_ms, per_tenant_jobs=scheduling.per_tenant_jobs)


# Seconds a probe waits for the engine to respond. After that the probe counts as failed.
PROBE_TIMEOUT = 10.0


async def probe_node(cluster: Cluster, node: ClusterNode, owner: str) -> None:
    """Probe ``node`` once: health and capacity, breaker, loss and fencing."""
    breaker = node.breaker
    if breaker.state == Breaker.OPEN:
        if node.lost_since is None:
            cluster.mark_lost(node)
        return  # no calls while open; half-open lets the next probe through
    provider = node.provider
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            if isinstance(provider, DockerProvider):
                cpu, memory = await provider.capacity()
            else:
                await provider.check()
                cpu, memory = host_capacity()
    except (CicdError, trio.TooSlowError) as exc:
        node.message = str(exc) or (f"the engine did not respond within {PROBE_TIMEOUT:g}s; "
                                    "check that it runs and is not stopped or overloaded")
        state = breaker.record(False)
        if state != Breaker.CLOSED:
            cluster.mark_lost(node)
        return
    if node.lost_since is not None or breaker.state == Breaker.HALF_OPEN:
        provider.resume_calls()  # it responds again: fencing needs its calls
        await _fence(cluster, node, owner)
        return
    breaker.record(True)
    cluster.set_capacity(node.name, cpu, memory)


async def _fence(cluster: Cluster, node: ClusterNode, owner: str) -> None:
    node.fencing = True
    cluster.node_changed(node.name)
    keep = {tuple(key.split("/", 1)) for key in cluster.running_on(node.name)}
    provider = node.provider
    removed = 0
    try:
        if isinstance(provider, DockerProvider):
            from cicd.workers.cleanup import fence

            removed = await fence(provider, owner, keep)  # type: ignore[arg-type]
    except CicdError as exc:
        node.fencing = False
        node.message = f"fencing failed: {exc}"
        node.breaker.record(False)
        node.breaker.trip()
        cluster.node_changed(node.name)
        logger.warning("node %s responds again, but removing its stale objects failed: %s",
                       node.name, exc)
        return
    logger.info("node %s: fenced, %d stale objects removed", node.name, removed)
    cluster.mark_returned(node)


async def watch_nodes(cluster: Cluster, owner: str, interval: float,
                      *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Probe every node now, then every ``interval`` seconds, each node on its own."""
    async with trio.open_nursery() as nursery:
        first = [trio.Event() for _ in cluster.nodes]
        for node, done in zip(cluster.nodes.values(), first, strict=True):
            nursery.start_soon(_watch_one, cluster, node, owner, interval, done)
        for done in first:
            await done.wait()
        task_status.started()


async def _watch_one(cluster: Cluster, node: ClusterNode, owner: str, interval: float,
                     first: trio.Event) -> None:
    while True:
        try:
            await probe_node(cluster, node, owner)
        except Exception:
            logger.exception("probing node %s failed", node.name)
        first.set()
        await trio.sleep(interval)


def restore_cordons(cluster: Cluster, states: dict[str, tuple[bool, bool]]) -> None:
    """Cordon and drain again the nodes an operator left so before the restart."""
    for name, (cordoned, draining) in states.items():
        node = cluster.nodes.get(name)
        if node is not None:
            node.cordoned, node.draining = cordoned, draining


"""Removal of labelled Docker objects: those of one run, and orphans of dead processes."""

from __future__ import annotations

import logging

import trio

from cicd.errors import ProviderError
from cicd.workers.docker import DockerProvider
from cicd.workers.labels import MANAGED, OWNER, RUN, owner_is_dead

logger = logging.getLogger("cicd.workers")


async def remove_run_objects(provider: DockerProvider, run_id: str) -> int:
    """Remove the containers and volumes of ``run_id`` that the provider's owner created;
    return the count.

    Another owner's objects of the same run stay: a server started on a copy of this
    server's database knows the same run ids. cicd creates no networks, so none are
    looked for: each list call costs the engine and the server's Python alike, and
    this runs after every run on every node.
    """
    return await _remove_matching(provider, [f"{RUN}={run_id}", f"{OWNER}={provider.owner}"])


async def remove_orphans(provider: DockerProvider) -> int:
    """Remove objects created on this host by cicd processes that no longer exist."""
    client = provider.client
    containers = await provider.call(client.api.containers, all=True, filters={"label": MANAGED})
    volumes = (await provider.call(client.api.volumes, filters={"label": MANAGED})) or {}
    owners = {c["Labels"].get(OWNER, "") for c in containers}
    owners |= {(v.get("Labels") or {}).get(OWNER, "") for v in volumes.get("Volumes") or []}
    removed = 0
    for owner in owners:
        if owner and owner_is_dead(owner):
            removed += await _remove_matching(provider, [f"{OWNER}={owner}"])
    return removed


async def _remove_matching(provider: DockerProvider, label_filters: list[str]) -> int:
    client = provider.client
    removed = 0
    filters = {"label": label_filters}
    with trio.CancelScope(shield=True):
        for info in await provider.call(client.api.containers, all=True, filters=filters):
            try:
                await provider.call(client.api.remove_container, info["Id"], force=True, v=True)
                removed += 1
            except ProviderError as exc:
                logger.warning("removing container %s failed: %s", info["Id"][:12], exc)
        volumes = (await provider.call(client.api.volumes, filters=filters)) or {}
        for volume in volumes.get("Volumes") or []:
            try:
                await provider.call(client.api.remove_volume, volume["Name"], force=True)
                removed += 1
            except ProviderError as exc:
                logger.warning("removing volume %s failed: %s", volume["Name"], exc)
    return removed


async def reap(provider: DockerProvider, owner: str, active_runs: set[str]) -> int:
    """Remove objects labelled with ``owner`` whose run is not in ``active_runs``."""
    client = provider.client
    filters = {"label": [f"{OWNER}={owner}"]}
    runs: set[str] = set()
    for info in await provider.call(client.api.containers, all=True, filters=filters):
        runs.add((info.get("Labels") or {}).get(RUN, ""))
    volumes = (await provider.call(client.api.volumes, filters=filters)) or {}
    for volume in volumes.get("Volumes") or []:
        runs.add((volume.get("Labels") or {}).get(RUN, ""))
    removed = 0
    for run_id in sorted(runs - active_runs - {""}):
        logger.info("reaper: removing leftover objects of run %s", run_id)
        removed += await remove_run_objects(provider, run_id)
    return removed


async def fence(provider: DockerProvider, owner: str, keep: set[tuple[str, str]]) -> int:
    """Remove ``owner``'s containers and volumes on this engine except those of the jobs
    in ``keep`` (run, job): what a lost node still held of jobs that ended elsewhere."""
    from cicd.workers.labels import JOB

    client = provider.client
    filters = {"label": [f"{OWNER}={owner}"]}
    removed = 0
    with trio.CancelScope(shield=True):
        for info in await provider.call(client.api.containers, all=True, filters=filters):
            labels = info.get("Labels") or {}
            if (labels.get(RUN, ""), labels.get(JOB, "")) in keep:
                continue
            await provider.call(client.api.remove_container, info["Id"], force=True, v=True)
            removed += 1
        volumes = (await provider.call(client.api.volumes, filters=filters)) or {}
        for volume in volumes.get("Volumes") or []:
            labels = volume.get("Labels") or {}
            if (labels.get(RUN, ""), labels.get(JOB, "")) in keep:
                continue
            await provider.call(client.api.remove_volume, volume["Name"], force=True)
            removed += 1
    return removed

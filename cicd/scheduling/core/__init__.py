"""The scheduling core: where pending jobs go, decided in one call per batch.

``place(nodes, jobs, policy)`` returns one :class:`Decision` per job: the node it is
assigned to, or why it waits, or why it never fits. The decision is made by the C
core (``scheduler.c`` through :mod:`.native`). When the extension is not built,
the first call warns with :class:`NativeCoreUnavailable`, logs it once, and every
call uses the pure-Python :mod:`.reference`, which decides identically but slower.

This package is pure: it imports no Trio, Docker, SQLite or web code. The rules
are in docs/scheduling.md.
"""

from __future__ import annotations

import functools
import importlib
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from cicd.scheduling.core import reference
from cicd.scheduling.core.model import (
    DEFAULT_AGING_INTERVAL_MS,
    Decision,
    JobRequest,
    NodeState,
    Outcome,
    Policy,
    Reason,
    TenantUsage,
)
from cicd.scheduling.core.tables import (
    NodeTable,
    Options,
    PackedJob,
    make_options,
    pack_job,
    pack_nodes,
)

__all__ = [
    "Decision",
    "JobRequest",
    "NativeCoreUnavailable",
    "NodeState",
    "NodeTable",
    "Options",
    "Outcome",
    "PackedJob",
    "Policy",
    "Reason",
    "TenantUsage",
    "active_backend",
    "make_options",
    "pack_job",
    "pack_nodes",
    "place",
    "place_one",
]

logger = logging.getLogger("cicd.scheduling")


class NativeCoreUnavailable(RuntimeWarning):
    """The C extension could not be imported, so the Python reference decides."""


@functools.cache
def _backend() -> tuple[str, Callable[..., list[Decision]], Callable[..., Decision]]:
    """Import the C wrapper once; on failure warn and log once, and use the reference.

    Returns the name, and the ``place`` and ``place_one`` functions of the implementation.
    """
    try:
        native = importlib.import_module("cicd.scheduling.core.native")
    except ImportError as exc:
        message = (f"the C scheduling core is not available ({exc}); placing jobs with the "
                   f"slower Python reference. Build it with `python3 -m pip install -e .` "
                   f"or `python3 setup.py build_ext --inplace`")
        logger.warning("%s", message)
        warnings.warn(message, NativeCoreUnavailable, stacklevel=3)
        return "reference", reference.place, reference.place_one
    return ("native", cast(Callable[..., list[Decision]], native.place),
            cast(Callable[..., Decision], native.place_one))


def active_backend() -> str:
    """Return ``"native"`` or ``"reference"``: the implementation that ``place`` uses."""
    return _backend()[0]


def place(
    nodes: Sequence[NodeState] | NodeTable,
    jobs: Sequence[JobRequest],
    policy: Policy | str = Policy.FIFO,
    *,
    backfill: bool = False,
    tenants: Mapping[str, TenantUsage] | None = None,
    tenant_limits: Mapping[str, int] | None = None,
    now_ms: int | None = None,
    aging_interval_ms: int = DEFAULT_AGING_INTERVAL_MS,
) -> list[Decision]:
    """Decide where each job goes, in one batch; return one Decision per job, in input order.

    ``nodes`` is a sequence of NodeState or a table from :func:`pack_nodes`, which
    saves packing the same nodes on every call. Jobs placed earlier in the batch
    count against the nodes and tenants for the later ones. ``backfill`` (binpack
    and spread only) lets jobs behind a waiting head run on any node but the one
    held for the head. ``tenants`` gives what each tenant already runs, for fair
    share and for ``tenant_limits``. ``tenant_limits`` maps a tenant to its maximum
    running jobs, and a tenant missing from it has no limit. Aging needs ``now_ms``, on the clock of the
    jobs' ``runnable_at_ms``: each ``aging_interval_ms`` waited raises a job's
    priority by one; ``None`` or an interval of 0 turns aging off.

    Raises TypeError or ValueError naming the first invalid input, and MemoryError
    when the C core cannot allocate its working memory.
    """
    return _backend()[1](nodes, jobs, policy, backfill=backfill, tenants=tenants,
                         tenant_limits=tenant_limits, now_ms=now_ms,
                         aging_interval_ms=aging_interval_ms)


def place_one(nodes: NodeTable, job: PackedJob, options: Options, *,
              tenant_at_limit: bool = False) -> Decision:
    """Decide one job alone: the Decision that ``place`` returns for a batch of just this job.

    For a caller that places jobs one at a time as they arrive, against nodes it
    keeps packed: ``nodes`` comes from :func:`pack_nodes`, ``job`` from
    :func:`pack_job` on the same table, and ``options`` from :func:`make_options`.
    Only the policy matters, since backfill and aging change nothing for a single
    job. Pass ``tenant_at_limit=True`` when the job's tenant already runs as many
    jobs as its limit allows: the job then waits (unless it never fits). The call
    places nothing: the node table stays as it was, like after ``place``.
    """
    return _backend()[2](nodes, job, options, tenant_at_limit=tenant_at_limit)

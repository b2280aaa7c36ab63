"""Labels on every Docker object cicd creates, so it can always find them again."""

from __future__ import annotations

import os
import socket

MANAGED = "io.cicd.managed"
RUN = "io.cicd.run"
JOB = "io.cicd.job"
STEP = "io.cicd.step"
OWNER = "io.cicd.owner"


def owner_id() -> str:
    """Return ``host:pid`` of this process, recorded on objects it creates."""
    return f"{socket.gethostname()}:{os.getpid()}"


def labels_for(run_id: str, job_id: str | None = None, step: int | None = None, *,
               owner: str | None = None) -> dict[str, str]:
    labels = {MANAGED: "1", RUN: run_id, OWNER: owner or owner_id()}
    if job_id is not None:
        labels[JOB] = job_id
    if step is not None:
        labels[STEP] = str(step)
    return labels


def owner_is_dead(owner: str) -> bool:
    """Tell whether ``owner`` (``host:pid``) names a process of this host that has exited.

    An owner on another host, or one that is not ``host:pid`` (a server's), is never
    judged dead here.
    """
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, under another user
    return False

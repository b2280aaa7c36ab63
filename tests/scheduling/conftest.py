"""Fixtures: the two implementations of ``place``, and small builders for the tables."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from cicd.scheduling.core import JobRequest, NodeState, reference
from cicd.scheduling.core.model import Decision

GiB = 1 << 30
Place = Callable[..., list[Decision]]


def native_module() -> ModuleType:
    """Return the C wrapper; fail under CI=true, skip elsewhere, when it is not built."""
    try:
        return importlib.import_module("cicd.scheduling.core.native")
    except ImportError as exc:
        message = (f"the C scheduling core is not built ({exc}); "
                   f"run `python3 -m pip install -e .` first")
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(params=["native", "reference"])
def place(request: pytest.FixtureRequest) -> Place:
    """``place`` of each implementation in turn."""
    if request.param == "native":
        return native_module().place  # type: ignore[no-any-return]
    return reference.place


def node(name: str = "n", cpu: int = 4000, memory: int = 8 * GiB, **fields: Any) -> NodeState:
    return NodeState(name=name, cpu_millis=cpu, memory_bytes=memory, **fields)


def job(job_id: str = "j", cpu: int = 1000, memory: int = GiB, tenant: str = "t",
        **fields: Any) -> JobRequest:
    return JobRequest(job_id=job_id, tenant=tenant, cpu_millis=cpu, memory_bytes=memory, **fields)


def nodes_of(decisions: list[Decision]) -> list[int | None]:
    return [decision.node for decision in decisions]

"""Which implementation ``place`` uses, the fallback, and sharing a packed node table."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from cicd.scheduling import core
from cicd.scheduling.core import NativeCoreUnavailable, pack_nodes, place, reference
from tests.scheduling.conftest import job, native_module, node
from tests.scheduling.test_equivalence import random_case


@pytest.fixture
def fresh_backend() -> Iterator[None]:
    """Forget which implementation was chosen, before and after the test."""
    core._backend.cache_clear()
    yield
    core._backend.cache_clear()


def test_native_core_in_use_when_built(fresh_backend: None) -> None:
    native_module()  # fails under CI=true, skips elsewhere, when the extension is not built
    assert core.active_backend() == "native"


def test_import_does_not_warn() -> None:
    # A fresh interpreter with every warning an error, as pytest runs.
    code = "import cicd.scheduling.core as c; c.place([], []); print(c.active_backend())"
    completed = subprocess.run([sys.executable, "-W", "error", "-c", code],
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "native" or "not available" in completed.stderr


def test_fallback_warns_and_logs_once(fresh_backend: None, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "cicd.scheduling.core.native", None)
    cluster, jobs = [node("a"), node("b", cordoned=True)], [job("x"), job("y", cpu=64000)]
    caplog.set_level(logging.WARNING, logger="cicd.scheduling")

    with pytest.warns(NativeCoreUnavailable, match="the C scheduling core is not available"):
        first = place(cluster, jobs, "spread")
    second = place(cluster, jobs, "spread")  # no second warning: pytest turns it into an error

    assert core.active_backend() == "reference"
    assert first == second == reference.place(cluster, jobs, "spread")
    warnings_logged = [r for r in caplog.records if r.name == "cicd.scheduling"]
    assert len(warnings_logged) == 1
    assert "pip install -e ." in warnings_logged[0].getMessage()


def test_packed_table_reused_across_calls() -> None:
    native = native_module()
    case = random_case(3, node_count=300, job_count=400)
    table = pack_nodes(case.nodes)
    for implementation in (native, reference):
        expected = implementation.place(case.nodes, case.jobs, **case.options)
        for _ in range(3):
            assert implementation.place(table, case.jobs, **case.options) == expected
        # Another batch and policy on the same table, then the first again.
        other = dict(case.options, policy="spread", backfill=True)
        assert (implementation.place(table, case.jobs[::2], **other)
                == implementation.place(case.nodes, case.jobs[::2], **other))
        assert implementation.place(table, case.jobs, **case.options) == expected


def test_threads_share_packed_table() -> None:
    native = native_module()
    case = random_case(5, node_count=200, job_count=300)
    table = pack_nodes(case.nodes)
    expected = native.place(case.nodes, case.jobs, **case.options)
    results: list[bool] = []

    def work() -> None:
        results.extend(native.place(table, case.jobs, **case.options) == expected
                       for _ in range(20))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [True] * 80

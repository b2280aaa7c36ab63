"""Invalid inputs are rejected with messages that name the value, in both implementations."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cicd.scheduling.core import JobRequest, TenantUsage, pack_nodes, reference
from cicd.scheduling.core.model import MAX_PRIORITY, MAX_QUANTITY
from cicd.scheduling.core.tables import JobTable, NodeTable, make_options, pack_jobs
from tests.scheduling.conftest import GiB, Place, job, native_module, node


@pytest.mark.parametrize(("fields", "error", "message"), [
    ({"cpu_millis": 1.5}, TypeError, r"nodes\[0\]\.cpu_millis must be an integer, got 1\.5"),
    ({"cpu_millis": True}, TypeError, r"nodes\[0\]\.cpu_millis must be an integer"),
    ({"memory_bytes": -1}, ValueError, r"nodes\[0\]\.memory_bytes must be from 0 to"),
    ({"allocated_cpu_millis": MAX_QUANTITY + 1}, ValueError, r"allocated_cpu_millis"),
    ({"reserved_cpu_millis": 5000}, ValueError,
     r"nodes\[0\]\.reserved_cpu_millis is 5000, more than its cpu_millis 4000"),
    ({"labels": {"zone": 1}}, TypeError, r"nodes\[0\]\.labels must map"),
    ({"labels": ["zone=a"]}, TypeError, r"nodes\[0\]\.labels must be a dict"),
    ({"cordoned": 1}, TypeError, r"nodes\[0\]\.cordoned must be a bool"),
    ({"name": None}, TypeError, r"nodes\[0\]\.name must be a str"),
])
def test_invalid_node_is_rejected(place: Place, fields: dict[str, Any], error: type,
                                  message: str) -> None:
    bad = msgspec.structs.replace(node(cpu=4000), **fields)
    with pytest.raises(error, match=message):
        place([bad], [job()], "fifo")


def test_invalid_node_is_named_by_index(place: Place) -> None:
    with pytest.raises(ValueError, match=r"nodes\[2\]\.cpu_millis"):
        place([node(), node(), node(cpu=-5)], [], "fifo")


def test_node_of_wrong_type_is_rejected(place: Place) -> None:
    with pytest.raises(TypeError, match=r"nodes\[1\] must be a NodeState, got dict"):
        place([node(), {"name": "x"}], [], "fifo")


@pytest.mark.parametrize(("fields", "error", "message"), [
    ({"cpu_millis": "1"}, TypeError, r"jobs\[0\]\.cpu_millis must be an integer, got '1'"),
    ({"memory_bytes": -1}, ValueError, r"jobs\[0\]\.memory_bytes must be from 0"),
    ({"priority": MAX_PRIORITY + 1}, ValueError, r"jobs\[0\]\.priority must be from"),
    ({"runnable_at_ms": -1}, ValueError, r"jobs\[0\]\.runnable_at_ms"),
    ({"tenant": ""}, ValueError, r"jobs\[0\]\.tenant must not be empty"),
    ({"tenant": 3}, TypeError, r"jobs\[0\]\.tenant must be a str"),
    ({"job_id": 3}, TypeError, r"jobs\[0\]\.job_id must be a str"),
    ({"required_labels": {"": "a"}}, TypeError, r"jobs\[0\]\.required_labels must map"),
    ({"required_labels": None}, TypeError, r"jobs\[0\]\.required_labels must be a dict"),
])
def test_invalid_job_is_rejected(place: Place, fields: dict[str, Any], error: type,
                                 message: str) -> None:
    bad = msgspec.structs.replace(job(), **fields)
    with pytest.raises(error, match=message):
        place([node()], [bad], "fifo")


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"policy": "round-robin"}, ValueError,
     r"unknown policy 'round-robin'; choose one of fifo, binpack, spread"),
    ({"policy": "fifo", "backfill": True}, ValueError, r"backfill needs the binpack or spread"),
    ({"policy": "spread", "backfill": 1}, TypeError, r"backfill must be a bool"),
    ({"policy": "fifo", "now_ms": -1}, ValueError, r"now_ms must be from 0"),
    ({"policy": "fifo", "now_ms": 1, "aging_interval_ms": -1}, ValueError,
     r"aging_interval_ms must be from 0"),
    ({"policy": "fifo", "tenant_limits": {"t": -1}}, ValueError,
     r"tenant_limits\['t'\] must be from 0"),
    ({"policy": "fifo", "tenant_limits": {"t": 1.0}}, TypeError,
     r"tenant_limits\['t'\] must be an integer"),
    ({"policy": "fifo", "tenants": {"t": 3}}, TypeError, r"tenants\['t'\] must be a TenantUsage"),
    ({"policy": "fifo", "tenants": {"t": TenantUsage(cpu_millis=-1)}}, ValueError,
     r"tenants\['t'\]\[0\]\.cpu_millis must be from 0"),
])
def test_invalid_option_is_rejected(place: Place, options: dict[str, Any], error: type,
                                    message: str) -> None:
    with pytest.raises(error, match=message):
        place([node()], [job()], **options)


@pytest.mark.parametrize("count", [1, 20, 40])
@pytest.mark.parametrize(("fields", "error", "message"), [
    ({"cpu_millis": 2**70}, ValueError, r"cpu_millis must be from 0 to \d+, got 1180591620717411303424"),
    ({"memory_bytes": -(2**64)}, ValueError, r"memory_bytes must be from 0 to"),
    ({"priority": 2**63}, ValueError, r"priority must be from -2147483648 to 2147483647"),
    ({"runnable_at_ms": MAX_QUANTITY + 1}, ValueError, r"runnable_at_ms must be from 0 to"),
    ({"priority": True}, TypeError, r"priority must be an integer, got True"),
    ({"required_labels": {"zone": 1}}, TypeError, r"required_labels must map"),
])
def test_invalid_job_named_in_long_batch(place: Place, count: int, fields: dict[str, Any],
                                         error: type, message: str) -> None:
    # Batches longer than a few jobs take other paths: column-wide checks, and in the
    # C wrapper arrays copied in one step, with ranges checked by the C core.
    jobs = [job(f"j{i}", required_labels={"zone": "a"}) for i in range(count)]
    jobs[count - 1] = msgspec.structs.replace(jobs[count - 1], **fields)
    with pytest.raises(error, match=rf"jobs\[{count - 1}\]\.{message}"):
        place([node(labels={"zone": "a"})], jobs, "fifo")


@pytest.mark.parametrize("count", [2, 20, 40])
def test_first_invalid_job_field_is_named(place: Place, count: int) -> None:
    # The range of job 0 is checked before the labels of job 1, and before the
    # type of a later field of job 0, as in the order of the checks.
    jobs = [job(f"j{i}") for i in range(count)]
    jobs[0] = msgspec.structs.replace(jobs[0], cpu_millis=-1, runnable_at_ms=0.5)
    jobs[1] = msgspec.structs.replace(jobs[1], required_labels={"": "a"}, tenant="")
    with pytest.raises(ValueError, match=r"jobs\[0\]\.cpu_millis must be from 0"):
        place([node()], jobs, "fifo")


@pytest.mark.parametrize("count", [2, 20, 40])
def test_invalid_labels_after_equal_valid_ones(place: Place, count: int) -> None:
    # Label classes are looked up by the items of the dict, so a dict equal to an
    # earlier valid one except for its types must still be checked.
    jobs = [job(f"j{i}", required_labels={"zone": "a"}) for i in range(count)]
    jobs[count - 1] = msgspec.structs.replace(jobs[count - 1], required_labels={"zone": b"a"})
    with pytest.raises(TypeError, match=rf"jobs\[{count - 1}\]\.required_labels must map"):
        place([node(labels={"zone": "a"})], jobs, "fifo")


INVALID_INTEGERS = [-1, -(2**63) - 1, 2**62 + 1, 2**63, 2**70, True, 1.5, "1", None]


def maybe_invalid(valid: st.SearchStrategy[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly valid values, sometimes one of ``invalid``."""
    return st.one_of(valid, valid, valid, st.sampled_from(invalid))


@st.composite
def maybe_invalid_jobs(draw: st.DrawFn) -> list[JobRequest]:
    count = draw(st.integers(0, 45))
    return [JobRequest(
        job_id=draw(maybe_invalid(st.just(f"j{i}"), [3, None])),
        tenant=draw(maybe_invalid(st.sampled_from(["a", "b"]), ["", 3])),
        cpu_millis=draw(maybe_invalid(st.integers(0, 8000), INVALID_INTEGERS)),
        memory_bytes=draw(maybe_invalid(st.integers(0, 16 * GiB), INVALID_INTEGERS)),
        required_labels=draw(maybe_invalid(st.sampled_from([{}, {"zone": "a"}, {"zone": "b"}]),
                                           [{"": "a"}, {"zone": 1}, None, []])),
        priority=draw(maybe_invalid(st.integers(-3, 3),
                                    [-(2**31) - 1, 2**31, 2**64, False, 2.0])),
        runnable_at_ms=draw(maybe_invalid(st.integers(0, 10**6), INVALID_INTEGERS)),
    ) for i in range(count)]


def outcome_of(place: Place, jobs: list[JobRequest]) -> object:
    """Return the decisions, or the type and message of the exception raised."""
    try:
        return place([node(labels={"zone": "a"}), node()], jobs, "binpack", backfill=True)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(maybe_invalid_jobs())
def test_invalid_jobs_rejected_alike(jobs: list[JobRequest]) -> None:
    native = native_module()
    assert outcome_of(native.place, jobs) == outcome_of(reference.place, jobs)


# ---- the C core's own checks: return codes become exceptions ------------------------


def broken_nodes() -> NodeTable:
    table = pack_nodes([node()])
    table.cpu_reserved = [table.cpu_capacity[0] + 1]  # skips pack_nodes' check
    return table


def test_native_rejects_invalid_node_table() -> None:
    native = native_module()
    jobs = pack_jobs([job()], pack_nodes([node()]))
    with pytest.raises(ValueError, match=r"the C scheduling core rejected nodes\[0\]"):
        native.place_tables(broken_nodes(), jobs, make_options("fifo", False, None, 0))


def test_native_rejects_invalid_label_ids() -> None:
    native = native_module()
    table = pack_nodes([node(labels={"zone": "a"})])
    table.node_label_ids = [5]  # no such label id
    with pytest.raises(ValueError, match=r"rejected nodes\[0\]"):
        native.place_tables(table, pack_jobs([], table), make_options("fifo", False, None, 0))


def job_table(**changes: Any) -> tuple[NodeTable, JobTable]:
    nodes = pack_nodes([node(labels={"zone": "a"})])
    jobs = pack_jobs([job(), job(required_labels={"zone": "a"})], nodes)
    for field, value in changes.items():
        setattr(jobs, field, value)
    return nodes, jobs


@pytest.mark.parametrize(("changes", "message"), [
    ({"tenant": [0, 7]}, r"rejected jobs\[1\]"),
    ({"cpu": [1, -1]}, r"rejected jobs\[1\]"),
    ({"label_class": [0, 9]}, r"rejected jobs\[1\]"),
    ({"class_label_ids": [3]}, r"rejected label classes\[1\]"),
    ({"class_offsets": [0, 1, 1]}, r"rejected label classes\[0\]"),
    ({"tenant_limit": [-2]}, r"rejected tenants\[0\]"),
])
def test_native_rejects_invalid_job_table(changes: dict[str, Any], message: str) -> None:
    native = native_module()
    nodes, jobs = job_table(**changes)
    with pytest.raises(ValueError, match=message):
        native.place_tables(nodes, jobs, make_options("fifo", False, None, 0))


def test_native_rejects_invalid_options() -> None:
    native = native_module()
    nodes, jobs = job_table()
    options = msgspec.structs.replace(make_options("fifo", False, None, 0), policy=7)
    with pytest.raises(ValueError, match=r"rejected the options"):
        native.place_tables(nodes, jobs, options)


def test_native_limits_match_model() -> None:
    from cicd.scheduling.core import model

    lib = native_module().lib
    assert lib.SCHED_MAX_QUANTITY == model.MAX_QUANTITY
    assert lib.SCHED_MIN_PRIORITY == model.MIN_PRIORITY
    assert lib.SCHED_MAX_PRIORITY == model.MAX_PRIORITY
    assert lib.SCHED_MAX_TIME_MS == model.MAX_TIME_MS
    assert [lib.SCHED_POLICY_FIFO, lib.SCHED_POLICY_BINPACK, lib.SCHED_POLICY_SPREAD] == [0, 1, 2]
    assert lib.SCHED_REASON_CPU_AND_MEMORY == len(model.REASONS) - 1
    assert lib.SCHED_OUTCOME_NEVER_FITS == len(model.OUTCOMES) - 1

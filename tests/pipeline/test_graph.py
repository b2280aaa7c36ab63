"""Tests of the needs graph: cycles, topological order and dependents."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cicd.pipeline import Job, Pipeline, Step
from cicd.pipeline.graph import dependents, find_cycle, find_unknown_needs, topological_order

Needs = dict[str, tuple[str, ...]]

CYCLES: list[tuple[str, Needs, list[str] | None]] = [
    ("empty", {}, None),
    ("single", {"a": ()}, None),
    ("chain", {"a": (), "b": ("a",), "c": ("b",)}, None),
    ("diamond", {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}, None),
    ("self", {"a": ("a",)}, ["a", "a"]),
    ("two jobs", {"a": ("b",), "b": ("a",)}, ["a", "b", "a"]),
    ("three jobs", {"a": ("b",), "b": ("c",), "c": ("a",)}, ["a", "b", "c", "a"]),
    ("found from later", {"c": (), "b": ("a",), "a": ("b",)}, ["b", "a", "b"]),
    ("rotated", {"x": ("c",), "a": ("b",), "b": ("c",), "c": ("a",)}, ["a", "b", "c", "a"]),
    ("behind dag", {"a": ("b",), "b": ("c",), "c": ("d",), "d": ("c",)}, ["c", "d", "c"]),
    ("unknown ignored", {"a": ("zzz",)}, None),
]


@pytest.mark.parametrize(
    ("needs", "cycle"), [case[1:] for case in CYCLES], ids=[c[0] for c in CYCLES]
)
def test_find_cycle(needs: Needs, cycle: list[str] | None) -> None:
    assert find_cycle(needs) == cycle


ORDERS: list[tuple[str, Needs, list[str]]] = [
    ("file order kept", {"a": (), "b": ("a",), "c": ("b",)}, ["a", "b", "c"]),
    ("needs first", {"c": ("b",), "b": ("a",), "a": ()}, ["a", "b", "c"]),
    ("independent", {"z": (), "y": (), "x": ()}, ["z", "y", "x"]),
    ("ready by file order", {"a": (), "b": ("a",), "c": ()}, ["a", "b", "c"]),
    ("late need", {"b": ("c",), "a": (), "c": ()}, ["a", "c", "b"]),
    ("diamond", {"d": ("b", "c"), "c": ("a",), "b": ("a",), "a": ()}, ["a", "c", "b", "d"]),
    ("repeated need", {"a": (), "b": ("a", "a")}, ["a", "b"]),
]


@pytest.mark.parametrize(
    ("needs", "order"), [case[1:] for case in ORDERS], ids=[c[0] for c in ORDERS]
)
def test_topological_order(needs: Needs, order: list[str]) -> None:
    assert topological_order(needs) == order


def test_topological_order_rejects_cycle() -> None:
    with pytest.raises(ValueError) as caught:
        topological_order({"a": (), "b": ("c",), "c": ("b",)})
    assert str(caught.value) == "the needs form a cycle: b -> c -> b"


def test_topological_order_rejects_unknown() -> None:
    with pytest.raises(ValueError) as caught:
        topological_order({"a": ("nope",)})
    assert str(caught.value) == "job 'a' needs 'nope', which is not a job"


def test_find_unknown_needs() -> None:
    needs: Needs = {"a": ("x",), "b": ("a", "y", "x")}
    assert find_unknown_needs(needs) == [("a", "x"), ("b", "y"), ("b", "x")]


def test_topological_order_long_chain() -> None:
    needs: Needs = {"j0": ()}
    for index in range(1, 5000):
        needs[f"j{index}"] = (f"j{index - 1}",)
    assert topological_order(needs) == list(needs)
    assert find_cycle(needs) is None


DEPENDENTS: list[tuple[str, Needs, str, set[str]]] = [
    ("leaf", {"a": (), "b": ("a",)}, "b", set()),
    ("direct", {"a": (), "b": ("a",)}, "a", {"b"}),
    ("transitive", {"a": (), "b": ("a",), "c": ("b",), "d": ()}, "a", {"b", "c"}),
    ("diamond", {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}, "b", {"d"}),
    ("diamond root", {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}, "a", {"b", "c", "d"}),
]


@pytest.mark.parametrize(
    ("needs", "job_id", "expected"),
    [case[1:] for case in DEPENDENTS],
    ids=[c[0] for c in DEPENDENTS],
)
def test_dependents(needs: Needs, job_id: str, expected: set[str]) -> None:
    assert dependents(needs, job_id) == expected


def test_dependents_unknown_job() -> None:
    with pytest.raises(LookupError) as caught:
        dependents({"a": (), "b": ()}, "c")
    assert str(caught.value) == "no job 'c'; jobs: a, b"


@st.composite
def acyclic_needs(draw: st.DrawFn) -> Needs:
    """Draw a DAG in which each job needs only jobs drawn before it, in shuffled file order."""
    count = draw(st.integers(min_value=1, max_value=12))
    names = [f"job{index}" for index in range(count)]
    needs: Needs = {}
    for index, name in enumerate(names):
        earlier = names[:index]
        chosen = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
        needs[name] = tuple(chosen)
    shuffled = draw(st.permutations(names))
    return {name: needs[name] for name in shuffled}


def reachable_users(needs: Needs, job_id: str) -> set[str]:
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for job, targets in needs.items():
            if job not in found and any(t == job_id or t in found for t in targets):
                found.add(job)
                changed = True
    return found


@settings(max_examples=200)
@given(acyclic_needs())
def test_dag_order_respects_needs(needs: Needs) -> None:
    order = topological_order(needs)
    position = {job: index for index, job in enumerate(order)}
    assert sorted(order) == sorted(needs)
    assert find_cycle(needs) is None
    for job, targets in needs.items():
        for needed in targets:
            assert position[needed] < position[job]


@settings(max_examples=200)
@given(acyclic_needs(), st.data())
def test_dag_dependents_match_reachability(needs: Needs, data: st.DataObject) -> None:
    job_id = data.draw(st.sampled_from(list(needs)))
    assert dependents(needs, job_id) == reachable_users(needs, job_id)


@settings(max_examples=200)
@given(acyclic_needs(), st.data())
def test_back_edge_makes_cycle(needs: Needs, data: st.DataObject) -> None:
    first = data.draw(st.sampled_from(list(needs)))
    last = data.draw(st.sampled_from(sorted(dependents(needs, first) | {first})))
    # last needs first, directly or through other jobs, so first needing last closes a
    # cycle (a self-loop when last is first).
    cyclic = dict(needs)
    cyclic[first] = (*needs[first], last)
    cycle = find_cycle(cyclic)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1
    for job, needed in itertools.pairwise(cycle):
        assert needed in cyclic[job]
    file_position = {job: index for index, job in enumerate(cyclic)}
    assert cycle[0] == min(cycle, key=file_position.__getitem__)


def make_pipeline(needs: Needs) -> Pipeline:
    jobs = {
        job_id: Job(id=job_id, image="busybox", needs=targets, steps=(Step(index=1, run="true"),))
        for job_id, targets in needs.items()
    }
    return Pipeline(jobs=jobs)


def test_pipeline_topological_order() -> None:
    pipeline = make_pipeline({"deploy": ("build", "lint"), "build": (), "lint": ()})
    assert pipeline.topological_order() == ["build", "lint", "deploy"]


def test_pipeline_dependents() -> None:
    pipeline = make_pipeline({"build": (), "test": ("build",), "deploy": ("test",)})
    assert pipeline.dependents("build") == {"test", "deploy"}
    assert pipeline.dependents("deploy") == set()


def test_pipeline_dependents_unknown_job() -> None:
    with pytest.raises(LookupError):
        make_pipeline({"build": ()}).dependents("nope")

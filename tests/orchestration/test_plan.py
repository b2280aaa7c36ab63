from __future__ import annotations

import pytest

from cicd.errors import IllegalTransition
from cicd.orchestration.plan import RunPlan
from cicd.orchestration.states import JOB_TRANSITIONS, State, check_transition
from cicd.pipeline.model import Job, Pipeline, Step


def _pipeline(needs: dict[str, tuple[str, ...]], allow: set[str] = frozenset()) -> Pipeline:
    jobs = {
        job_id: Job(id=job_id, image="busybox", needs=deps, allow_failure=job_id in allow,
                    steps=(Step(index=1, run="true"),))
        for job_id, deps in needs.items()
    }
    return Pipeline(jobs=jobs)


def test_plan_releases_roots_first() -> None:
    plan = RunPlan(_pipeline({"a": (), "b": (), "c": ("a", "b")}))
    assert plan.take_ready() == ["a", "b"]
    assert plan.take_ready() == []


def test_plan_diamond_runs_join_after_both() -> None:
    plan = RunPlan(_pipeline({"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}))
    assert plan.take_ready() == ["a"]
    assert plan.finish("a", State.SUCCEEDED) == []
    assert plan.take_ready() == ["b", "c"]
    plan.finish("b", State.SUCCEEDED)
    assert plan.take_ready() == []
    plan.finish("c", State.SUCCEEDED)
    assert plan.take_ready() == ["d"]
    plan.finish("d", State.SUCCEEDED)
    assert plan.done
    assert plan.run_state(cancelled=False) is State.SUCCEEDED


def test_plan_failure_skips_transitive_dependents_only() -> None:
    plan = RunPlan(_pipeline({"a": (), "b": ("a",), "c": ("b",), "x": ()}))
    assert plan.take_ready() == ["a", "x"]
    assert plan.finish("a", State.FAILED) == ["b", "c"]
    plan.finish("x", State.SUCCEEDED)
    assert plan.done
    assert plan.states["x"] is State.SUCCEEDED
    assert plan.run_state(cancelled=False) is State.FAILED


def test_plan_allowed_failure_does_not_skip() -> None:
    plan = RunPlan(_pipeline({"lint": (), "deploy": ("lint",)}, allow={"lint"}))
    plan.take_ready()
    assert plan.finish("lint", State.FAILED) == []
    assert plan.take_ready() == ["deploy"]
    plan.finish("deploy", State.SUCCEEDED)
    assert plan.run_state(cancelled=False) is State.SUCCEEDED


def test_plan_timeout_skips_like_failure() -> None:
    plan = RunPlan(_pipeline({"a": (), "b": ("a",)}))
    plan.take_ready()
    assert plan.finish("a", State.TIMED_OUT) == ["b"]


def test_plan_cancel_pending_leaves_released_jobs() -> None:
    plan = RunPlan(_pipeline({"a": (), "b": ("a",)}))
    plan.take_ready()
    assert plan.cancel_pending() == ["b"]
    assert not plan.done
    plan.finish("a", State.CANCELLED)
    assert plan.done
    assert plan.run_state(cancelled=True) is State.CANCELLED


def test_plan_halted_run_outcome() -> None:
    # A shutdown starts no new jobs: a run whose started jobs all passed succeeds.
    finished = RunPlan(_pipeline({"a": ()}))
    finished.take_ready()
    finished.finish("a", State.SUCCEEDED)
    assert finished.run_state(cancelled=False, halted=True) is State.SUCCEEDED
    assert finished.run_state(cancelled=True, halted=True) is State.CANCELLED

    cut_short = RunPlan(_pipeline({"a": (), "b": ("a",)}))
    cut_short.take_ready()
    cut_short.cancel_pending()
    cut_short.finish("a", State.SUCCEEDED)
    assert cut_short.run_state(cancelled=False, halted=True) is State.CANCELLED


def test_transition_running_to_pending_rejected() -> None:
    with pytest.raises(IllegalTransition, match="running -> pending"):
        check_transition(JOB_TRANSITIONS, State.RUNNING, State.PENDING, what="job build")


def test_transition_terminal_states_final() -> None:
    for terminal in (State.SUCCEEDED, State.FAILED, State.SKIPPED):
        with pytest.raises(IllegalTransition):
            check_transition(JOB_TRANSITIONS, terminal, State.RUNNING, what="job x")
    assert check_transition(JOB_TRANSITIONS, State.PENDING, State.SCHEDULED, what="j") is State.SCHEDULED


def test_plan_cancelled_jobs_cancel_the_run() -> None:
    plan = RunPlan(_pipeline({"quick": (), "slow": (), "dep": ("slow",)}))
    plan.take_ready()
    assert plan.cancel_one("dep")
    plan.finish("quick", State.SUCCEEDED)
    plan.finish("slow", State.CANCELLED)
    assert plan.done
    assert plan.cancelled_jobs() == ["slow", "dep"]
    assert plan.run_state(cancelled=False) is State.CANCELLED


def test_plan_failure_outweighs_cancelled_jobs() -> None:
    plan = RunPlan(_pipeline({"a": (), "b": ()}))
    plan.take_ready()
    plan.finish("a", State.FAILED)
    plan.finish("b", State.CANCELLED)
    assert plan.failed_jobs() == ["a"]
    assert plan.run_state(cancelled=False) is State.FAILED

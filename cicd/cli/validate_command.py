"""``cicd validate FILE``: parse a pipeline and report the first error, or a summary."""

from __future__ import annotations

import argparse
import sys

from cicd.errors import PipelineError
from cicd.pipeline import Pipeline, load_pipeline


def validate_command(args: argparse.Namespace) -> int:
    try:
        pipeline = load_pipeline(args.file)
    except PipelineError as exc:
        print(f"cicd: invalid pipeline: {exc}", file=sys.stderr)
        return 2
    steps = sum(len(job.steps) for job in pipeline.jobs.values())
    order = stages(pipeline)
    jobs = len(pipeline.jobs)
    print(f"{args.file}: valid, {jobs} job{'s' if jobs != 1 else ''}, "
          f"{steps} step{'s' if steps != 1 else ''} ({order})")
    return 0


def stages(pipeline: Pipeline) -> str:
    """Describe the order of the jobs: jobs that may run together are separated by
    commas, and ``->`` separates a stage from the next one, whose jobs need it.
    A job's stage is one past the latest stage of the jobs it needs."""
    stage_of: dict[str, int] = {}
    for job_id in pipeline.topological_order():
        needs = pipeline.jobs[job_id].needs
        stage_of[job_id] = 1 + max((stage_of[needed] for needed in needs), default=-1)
    grouped: list[list[str]] = [[] for _ in range(1 + max(stage_of.values(), default=-1))]
    for job_id, stage in stage_of.items():
        grouped[stage].append(job_id)
    return " -> ".join(", ".join(jobs) for jobs in grouped)

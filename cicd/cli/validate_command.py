"""``cicd validate FILE``: parse a pipeline and report the first error, or a summary."""

from __future__ import annotations

import argparse
import sys

from cicd.errors import PipelineError
from cicd.pipeline import load_pipeline


def validate_command(args: argparse.Namespace) -> int:
    try:
        pipeline = load_pipeline(args.file)
    except PipelineError as exc:
        print(f"cicd: invalid pipeline: {exc}", file=sys.stderr)
        return 2
    steps = sum(len(job.steps) for job in pipeline.jobs.values())
    order = " -> ".join(pipeline.topological_order())
    jobs = len(pipeline.jobs)
    print(f"{args.file}: valid, {jobs} job{'s' if jobs != 1 else ''}, "
          f"{steps} step{'s' if steps != 1 else ''} ({order})")
    return 0

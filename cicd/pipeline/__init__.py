"""The pipeline file format: its model, parser, quantities and ``needs`` graph.

This package is pure: it reads text and builds immutable values, and it imports
only msgspec, ruamel.yaml, the standard library and ``cicd.errors``.
"""

from __future__ import annotations

from cicd.pipeline.model import Job, Pipeline, Resources, Step, effective_env
from cicd.pipeline.parser import MAX_FILE_BYTES, MAX_NODES, load_pipeline, parse_pipeline
from cicd.pipeline.quantities import format_duration, parse_cpu, parse_duration, parse_memory

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "Job",
    "Pipeline",
    "Resources",
    "Step",
    "effective_env",
    "format_duration",
    "load_pipeline",
    "parse_cpu",
    "parse_duration",
    "parse_memory",
    "parse_pipeline",
]

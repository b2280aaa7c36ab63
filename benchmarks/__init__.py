"""Benchmarks of cicd against raw Docker, docker-py and gitlab-ci-local.

Run them with ``python3 -m benchmarks`` (or ``nox -s bench``). Each benchmark runs one
warm-up round, then the requested number of timed repetitions, and reports the median
and the 90th percentile. Ratios compare medians measured in the same invocation.
docs/benchmarks.md records the results and the machine they came from.
"""

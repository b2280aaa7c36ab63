"""Tests of parse_pipeline and load_pipeline: valid files, and invalid files with exact errors."""

from __future__ import annotations

import json
import os
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cicd.errors import PipelineError
from cicd.pipeline import (
    Job,
    Pipeline,
    Resources,
    Step,
    effective_env,
    load_pipeline,
    parse_pipeline,
    parser,
)

STEP = "steps: [{run: echo}]"
MINIMAL = f"jobs:\n  a: {{image: x, {STEP}}}\n"
DURATION = "expected a duration like 30s, 10m or 1h30m, found"
IMAGE = (
    "expected an image reference like busybox, python:3.12-slim or "
    "registry.example.com:5000/team/app:1.0, found"
)
SURROGATE_FIX = (
    "which UTF-8 cannot encode; write the character itself, or escape it as \\U0001F600 or "
    "as a high surrogate followed by a low one, such as \\ud83d\\ude00"
)

EXAMPLE = """\
version: 1               # optional, only 1 is accepted
name: example            # optional
env: {GREETING: hello}   # pipeline-wide
jobs:
  build:
    image: debian-python:bookworm
    env: {A: "1"}
    timeout: 10m         # durations: 30s, 10m, 1h30m
    resources: {cpu: 0.5, memory: 512Mi}
    steps:
      - name: compile
        run: |
          python3 -m compileall -q src
      - run: python3 -m pytest -q
        timeout: 5m
        env: {B: "2"}
        allow_failure: false
  lint:
    image: debian-python:bookworm
    allow_failure: true
    steps:
      - run: echo lint
  deploy:
    needs: [build, lint]
    image: busybox
    steps:
      - run: echo deploy
"""


def lines(*rows: str) -> str:
    return "\n".join(rows) + "\n"


def with_env(*rows: str) -> str:
    """Return a minimal pipeline whose top-level env is the given indented rows."""
    return lines("env:", *rows, "jobs:", f"  a: {{image: x, {STEP}}}")


def test_example_file() -> None:
    pipeline = parse_pipeline(EXAMPLE, file=".cicd.yml")
    assert pipeline == Pipeline(
        version=1,
        name="example",
        env={"GREETING": "hello"},
        source_file=".cicd.yml",
        jobs={
            "build": Job(
                id="build",
                image="debian-python:bookworm",
                env={"A": "1"},
                timeout=600.0,
                resources=Resources(cpu_millis=500, memory_bytes=512 * 1024**2),
                steps=(
                    Step(index=1, name="compile", run="python3 -m compileall -q src\n", line=11),
                    Step(
                        index=2,
                        run="python3 -m pytest -q",
                        timeout=300.0,
                        env={"B": "2"},
                        line=14,
                    ),
                ),
                line=5,
            ),
            "lint": Job(
                id="lint",
                image="debian-python:bookworm",
                allow_failure=True,
                steps=(Step(index=1, run="echo lint", line=22),),
                line=18,
            ),
            "deploy": Job(
                id="deploy",
                image="busybox",
                needs=("build", "lint"),
                steps=(Step(index=1, run="echo deploy", line=27),),
                line=23,
            ),
        },
    )
    assert list(pipeline.jobs) == ["build", "lint", "deploy"]
    assert pipeline.topological_order() == ["build", "lint", "deploy"]
    assert pipeline.dependents("lint") == {"deploy"}


def test_minimal_defaults() -> None:
    pipeline = parse_pipeline(MINIMAL)
    job = pipeline.jobs["a"]
    assert pipeline.version == 1
    assert pipeline.name is None
    assert pipeline.env == {}
    assert pipeline.source_file == "<pipeline>"
    assert job.needs == ()
    assert job.env == {}
    assert job.timeout == 3600.0
    assert job.allow_failure is False
    assert job.resources == Resources()
    assert job.steps[0].name is None
    assert job.steps[0].timeout is None
    assert job.steps[0].allow_failure is False


def env_value(name: str) -> Callable[[Pipeline], Any]:
    return lambda pipeline: pipeline.env[name]


def job_field(field: str) -> Callable[[Pipeline], Any]:
    return lambda pipeline: getattr(pipeline.jobs["a"], field)


def step_field(field: str) -> Callable[[Pipeline], Any]:
    return lambda pipeline: getattr(pipeline.jobs["a"].steps[0], field)


def job_with(*rows: str) -> str:
    """Return a pipeline with one job 'a' that has the given extra indented rows."""
    return lines("jobs:", "  a:", "    image: x", *rows, "    steps: [{run: echo}]")


# (case id, file text, value extractor, expected value)
VALID: list[tuple[str, str, Callable[[Pipeline], Any], Any]] = [
    ("env leading zero", with_env("  A: 012345"), env_value("A"), "012345"),
    ("env float text", with_env("  A: 1.50"), env_value("A"), "1.50"),
    ("env true text", with_env("  A: true"), env_value("A"), "true"),
    ("env hex text", with_env("  A: 0x1F"), env_value("A"), "0x1F"),
    ("env exponent", with_env("  A: 1e3"), env_value("A"), "1e3"),
    ("env inf", with_env("  A: .inf"), env_value("A"), ".inf"),
    ("env yes", with_env("  A: yes"), env_value("A"), "yes"),
    ("env on", with_env("  A: on"), env_value("A"), "on"),
    ("env n", with_env("  A: n"), env_value("A"), "n"),
    ("env date", with_env("  A: 2024-01-02"), env_value("A"), "2024-01-02"),
    ("env quoted null", with_env("  A: 'null'"), env_value("A"), "null"),
    ("env quoted tilde", with_env('  A: "~"'), env_value("A"), "~"),
    ("env empty quoted", with_env('  A: ""'), env_value("A"), ""),
    ("env str tag empty", with_env("  A: !!str"), env_value("A"), ""),
    ("env single quotes", with_env("  A: 'it''s'"), env_value("A"), "it's"),
    ("env escapes", with_env('  A: "tab\\tend"'), env_value("A"), "tab\tend"),
    ("env literal block", with_env("  A: |", "    one", "    two"), env_value("A"), "one\ntwo\n"),
    ("env folded block", with_env("  A: >-", "    one", "    two"), env_value("A"), "one two"),
    ("env plain multiline", with_env("  A: one", "    two"), env_value("A"), "one two"),
    ("env underscore name", with_env("  _A_1: x"), env_value("_A_1"), "x"),
    ("yaml 1.1 directive", "%YAML 1.1\n---\n" + with_env("  A: yes"), env_value("A"), "yes"),
    ("name", "name: nightly\n" + MINIMAL, lambda p: p.name, "nightly"),
    ("image number", lines("jobs:", f"  a: {{image: 3, {STEP}}}"), job_field("image"), "3"),
    ("allow_failure true", job_with("    allow_failure: true"), job_field("allow_failure"), True),
    ("allow_failure True", job_with("    allow_failure: True"), job_field("allow_failure"), True),
    ("allow_failure TRUE", job_with("    allow_failure: TRUE"), job_field("allow_failure"), True),
    (
        "allow_failure False",
        job_with("    allow_failure: False"),
        job_field("allow_failure"),
        False,
    ),
    ("timeout 30s", job_with("    timeout: 30s"), job_field("timeout"), 30.0),
    ("timeout 1h30m", job_with("    timeout: 1h30m"), job_field("timeout"), 5400.0),
    ("timeout quoted", job_with('    timeout: "500ms"'), job_field("timeout"), 0.5),
    (
        "cpu half",
        job_with("    resources: {cpu: 0.5}"),
        job_field("resources"),
        Resources(cpu_millis=500),
    ),
    (
        "cpu two",
        job_with("    resources: {cpu: 2}"),
        job_field("resources"),
        Resources(cpu_millis=2000),
    ),
    (
        "cpu millicores",
        job_with('    resources: {cpu: "250m"}'),
        job_field("resources"),
        Resources(cpu_millis=250),
    ),
    (
        "memory bytes",
        job_with("    resources: {memory: 10000000}"),
        job_field("resources"),
        Resources(memory_bytes=10_000_000),
    ),
    (
        "memory decimal unit",
        job_with("    resources: {memory: 2G}"),
        job_field("resources"),
        Resources(memory_bytes=2_000_000_000),
    ),
    ("resources empty", job_with("    resources: {}"), job_field("resources"), Resources()),
    ("job env", job_with("    env: {A: 007}"), job_field("env"), {"A": "007"}),
    (
        "step fields",
        lines(
            "jobs:",
            "  a:",
            "    image: x",
            "    steps:",
            "      - name: unit tests",
            "        run: make test",
            "        timeout: 2m",
            "        allow_failure: true",
            "        env: {CI: 1}",
        ),
        lambda p: p.jobs["a"].steps[0],
        Step(
            index=1,
            name="unit tests",
            run="make test",
            timeout=120.0,
            allow_failure=True,
            env={"CI": "1"},
            line=5,
        ),
    ),
    (
        "run keeps text",
        lines("jobs:", "  a: {image: x, steps: [{run: '  x  '}]}"),
        step_field("run"),
        "  x  ",
    ),
    (
        "needs string",
        lines("jobs:", f"  a: {{image: x, {STEP}}}", f"  b: {{image: x, needs: a, {STEP}}}"),
        lambda p: p.jobs["b"].needs,
        ("a",),
    ),
    (
        "needs later job",
        lines("jobs:", f"  b: {{image: x, needs: [a], {STEP}}}", f"  a: {{image: x, {STEP}}}"),
        lambda p: p.topological_order(),
        ["a", "b"],
    ),
    ("needs empty", job_with("    needs: []"), job_field("needs"), ()),
    (
        "diamond",
        lines(
            "jobs:",
            f"  a: {{image: x, {STEP}}}",
            f"  b: {{image: x, needs: a, {STEP}}}",
            f"  c: {{image: x, needs: a, {STEP}}}",
            f"  d: {{image: x, needs: [b, c], {STEP}}}",
        ),
        lambda p: p.topological_order(),
        ["a", "b", "c", "d"],
    ),
    (
        "job id characters",
        lines("jobs:", f"  _Build.linux-x86_64: {{image: x, {STEP}}}"),
        lambda p: list(p.jobs),
        ["_Build.linux-x86_64"],
    ),
    (
        "job id 63 chars",
        lines("jobs:", f"  {'j' * 63}: {{image: x, {STEP}}}"),
        lambda p: len(next(iter(p.jobs))),
        63,
    ),
    (
        "merge explicit wins",
        lines(
            "jobs:",
            "  a: &base",
            "    image: x",
            "    timeout: 5m",
            f"    {STEP}",
            "  b:",
            "    <<: *base",
            "    timeout: 1m",
        ),
        lambda p: (p.jobs["b"].image, p.jobs["b"].timeout, p.jobs["a"].timeout),
        ("x", 60.0, 300.0),
    ),
    (
        "merge list earlier wins",
        lines(
            "jobs:",
            "  a:",
            "    <<: [{image: first, timeout: 1m}, {image: second, " + STEP + "}]",
        ),
        lambda p: (p.jobs["a"].image, p.jobs["a"].timeout, len(p.jobs["a"].steps)),
        ("first", 60.0, 1),
    ),
    (
        "merge env",
        lines(
            "env: &common {A: one, B: two}",
            "jobs:",
            f"  a: {{image: x, env: {{<<: *common, B: three}}, {STEP}}}",
        ),
        lambda p: p.jobs["a"].env,
        {"A": "one", "B": "three"},
    ),
    (
        "alias scalar",
        lines("jobs:", f"  a: {{image: &img busybox, {STEP}}}", f"  b: {{image: *img, {STEP}}}"),
        lambda p: p.jobs["b"].image,
        "busybox",
    ),
    (
        "anchor redefined",
        lines("env: {A: &v one, B: *v, C: &v two, D: *v}", "jobs:", f"  a: {{image: x, {STEP}}}"),
        lambda p: p.env,
        {"A": "one", "B": "one", "C": "two", "D": "two"},
    ),
    ("comments only lines", "# pipeline\n\n" + MINIMAL + "# end\n", lambda p: list(p.jobs), ["a"]),
    ("surrogate pair joined", 'name: "\\ud83d\\ude00"\n' + MINIMAL, lambda p: p.name, "\U0001F600"),
    ("name 200 chars", f"name: {'n' * 200}\n" + MINIMAL, lambda p: len(p.name), 200),
    ("name with unicode", "name: Prüfung — nightly\n" + MINIMAL, lambda p: p.name, "Prüfung — nightly"),
    (
        "step name 200 chars",
        lines("jobs:", f"  a: {{image: x, steps: [{{name: {'s' * 200}, run: a}}]}}"),
        lambda p: len(p.jobs["a"].steps[0].name),
        200,
    ),
    (
        "step name punctuation",
        lines("jobs:", "  a: {image: x, steps: [{name: 'unit tests (3.12): a.b%c', run: a}]}"),
        step_field("name"),
        "unit tests (3.12): a.b%c",
    ),
    (
        "step name three dots",
        lines("jobs:", "  a: {image: x, steps: [{name: '...', run: a}]}"),
        step_field("name"),
        "...",
    ),
    (
        "run keeps control characters",
        lines("jobs:", '  a: {image: x, steps: [{run: "printf \'\\e[31m\'\\n\\techo\\r"}]}'),
        step_field("run"),
        "printf '\x1b[31m'\n\techo\r",
    ),
    ("env keeps newline", with_env('  A: "one\\ntwo\\t"'), env_value("A"), "one\ntwo\t"),
    (
        "image registry port",
        lines("jobs:", f"  a: {{image: 'registry.example.com:5000/team/app:1.0', {STEP}}}"),
        job_field("image"),
        "registry.example.com:5000/team/app:1.0",
    ),
    (
        "runs_on label value",
        job_with("    runs_on: {pool: fast lane}"),
        job_field("runs_on"),
        {"pool": "fast lane"},
    ),
]


@pytest.mark.parametrize(
    ("text", "extract", "expected"), [case[1:] for case in VALID], ids=[case[0] for case in VALID]
)
def test_valid_file(text: str, extract: Callable[[Pipeline], Any], expected: Any) -> None:
    assert extract(parse_pipeline(text, file=".cicd.yml")) == expected


# (case id, file text, exact str() of the PipelineError)
INVALID: list[tuple[str, str, str]] = [
    ("empty file", "", ".cicd.yml:1:1: the file is empty; expected a mapping with a 'jobs' key"),
    (
        "comments only",
        "# nothing\n",
        ".cicd.yml:1:1: the file is empty; expected a mapping with a 'jobs' key",
    ),
    ("root list", "- a\n", ".cicd.yml:1:1: expected a mapping with a 'jobs' key, found a list"),
    ("root scalar", "jobs\n", ".cicd.yml:1:1: expected a mapping with a 'jobs' key, found 'jobs'"),
    ("missing jobs", "name: x\n", ".cicd.yml:1:1: missing required key 'jobs'"),
    (
        "unknown top key close",
        MINIMAL + "nmae: x\n",
        ".cicd.yml:3:1: unknown key 'nmae'; did you mean 'name'?",
    ),
    (
        "unknown top key far",
        "stages: [a]\n" + MINIMAL,
        ".cicd.yml:1:1: unknown key 'stages'; valid keys are version, name, env, priority, jobs",
    ),
    (
        "version 2",
        "version: 2\n" + MINIMAL,
        ".cicd.yml:1:10: version: expected version 1, found '2'; this cicd reads version 1 only",
    ),
    (
        "version null",
        "version:\n" + MINIMAL,
        ".cicd.yml:1:1: version: expected version 1, found null; this cicd reads version 1 only",
    ),
    (
        "name empty",
        "name: ''\n" + MINIMAL,
        ".cicd.yml:1:7: name: expected a non-empty name, found ''",
    ),
    (
        "name list",
        "name: [a]\n" + MINIMAL,
        ".cicd.yml:1:7: name: expected a non-empty name, found a list",
    ),
    (
        "jobs empty",
        "jobs: {}\n",
        ".cicd.yml:1:7: jobs: expected a mapping of job ids to jobs, found an empty mapping",
    ),
    (
        "jobs list",
        "jobs: [a]\n",
        ".cicd.yml:1:7: jobs: expected a mapping of job ids to jobs, found a list",
    ),
    (
        "jobs null",
        "jobs:\n",
        ".cicd.yml:1:1: jobs: expected a mapping of job ids to jobs, found null",
    ),
    (
        "job null",
        "jobs:\n  a:\n",
        ".cicd.yml:2:3: jobs.a: expected a job mapping with 'image' and 'steps' keys, found null",
    ),
    (
        "job id leading dash",
        lines("jobs:", f"  -a: {{image: x, {STEP}}}"),
        (
            ".cicd.yml:2:3: jobs: invalid job id '-a'; use letters, digits, '_', '.' and '-', "
            "starting with a letter, digit or '_'"
        ),
    ),
    (
        "job id space",
        lines("jobs:", f"  a b: {{image: x, {STEP}}}"),
        (
            ".cicd.yml:2:3: jobs: invalid job id 'a b'; use letters, digits, '_', '.' and '-', "
            "starting with a letter, digit or '_'"
        ),
    ),
    (
        "job id too long",
        lines("jobs:", f"  {'j' * 64}: {{image: x, {STEP}}}"),
        f".cicd.yml:2:3: jobs: job id '{'j' * 64}' has 64 characters; the maximum is 63",
    ),
    (
        "job key typo",
        lines("jobs:", "  build:", "    imgae: x", f"    {STEP}"),
        ".cicd.yml:3:5: jobs.build: unknown key 'imgae'; did you mean 'image'?",
    ),
    (
        "job key unknown",
        lines("jobs:", "  build:", "    image: x", "    script: make", f"    {STEP}"),
        (
            ".cicd.yml:4:5: jobs.build: unknown key 'script'; valid keys are image, needs, env, "
            "timeout, allow_failure, resources, runs_on, retry, steps"
        ),
    ),
    (
        "job missing image",
        lines("jobs:", "  a:", f"    {STEP}"),
        ".cicd.yml:3:5: jobs.a: missing required key 'image'",
    ),
    (
        "job missing steps",
        lines("jobs:", "  a:", "    image: x"),
        ".cicd.yml:3:5: jobs.a: missing required key 'steps'",
    ),
    (
        "image empty",
        lines("jobs:", f"  a: {{image: '', {STEP}}}"),
        ".cicd.yml:2:14: jobs.a.image: expected a non-empty image name, found ''",
    ),
    (
        "image null",
        lines("jobs:", "  a:", "    image:", f"    {STEP}"),
        ".cicd.yml:3:5: jobs.a.image: expected a non-empty image name, found null",
    ),
    (
        "image mapping",
        lines("jobs:", f"  a: {{image: {{name: x}}, {STEP}}}"),
        ".cicd.yml:2:14: jobs.a.image: expected a non-empty image name, found a mapping",
    ),
    (
        "image with space",
        lines("jobs:", f"  a: {{image: debian bookworm, {STEP}}}"),
        (
            f".cicd.yml:2:14: jobs.a.image: {IMAGE} 'debian bookworm'; a repository name is "
            "lowercase letters and digits joined by '.', '_', '__', dashes or '/', starting and "
            "ending with a letter or digit"
        ),
    ),
    (
        "steps empty",
        lines("jobs:", "  a: {image: x, steps: []}"),
        ".cicd.yml:2:24: jobs.a.steps: expected a non-empty list of steps, found an empty list",
    ),
    (
        "steps mapping",
        lines("jobs:", "  a: {image: x, steps: {run: x}}"),
        ".cicd.yml:2:24: jobs.a.steps: expected a non-empty list of steps, found a mapping",
    ),
    (
        "step is a string",
        lines("jobs:", "  a:", "    image: x", "    steps:", "      - echo hi"),
        (
            ".cicd.yml:5:9: jobs.a.steps[1]: expected a step mapping with a 'run' key, found 'echo hi'; "
            "write the step as '- run: <command>'"
        ),
    ),
    (
        "step missing run",
        lines("jobs:", "  a:", "    image: x", "    steps:", "      - run: a", "      - name: b"),
        ".cicd.yml:6:9: jobs.a.steps[2]: missing required key 'run'",
    ),
    (
        "step run empty",
        lines("jobs:", "  a: {image: x, steps: [{run: '  '}]}"),
        ".cicd.yml:2:31: jobs.a.steps[1].run: expected a non-empty command, found '  '",
    ),
    (
        "step run null",
        lines("jobs:", "  a:", "    image: x", "    steps:", "      - run:"),
        ".cicd.yml:5:9: jobs.a.steps[1].run: expected a non-empty command, found null",
    ),
    (
        "step run list",
        lines("jobs:", "  a: {image: x, steps: [{run: [a, b]}]}"),
        ".cicd.yml:2:31: jobs.a.steps[1].run: expected a non-empty command, found a list",
    ),
    (
        "step key typo",
        lines("jobs:", "  a: {image: x, steps: [{run: a, tiemout: 5s}]}"),
        ".cicd.yml:2:34: jobs.a.steps[1]: unknown key 'tiemout'; did you mean 'timeout'?",
    ),
    (
        "step name empty",
        lines("jobs:", "  a: {image: x, steps: [{name: '', run: a}]}"),
        ".cicd.yml:2:32: jobs.a.steps[1].name: expected a non-empty step name, found ''",
    ),
    (
        "step name a number",
        lines("jobs:", "  a: {image: x, steps: [{run: a}, {name: '1', run: b}]}"),
        (".cicd.yml:2:42: jobs.a.steps[2].name: step name '1' is a number, which reads as a "
         "step's index wherever steps are named; give a name that is not a number"),
    ),
    (
        "step names repeated",
        lines(
            "jobs:",
            "  a:",
            "    image: x",
            "    steps:",
            "      - name: test",
            "        run: a",
            "      - run: b",
            "      - name: test",
            "        run: c",
        ),
        ".cicd.yml:8:15: jobs.a.steps[3].name: duplicate step name 'test' on lines 5 and 8",
    ),
    (
        "job timeout words",
        lines(
            "jobs:",
            "  build:",
            "    image: x",
            "    steps:",
            "      - run: a",
            "    env: {}",
            "    timeout: 10 minutes",
        ),
        f".cicd.yml:7:14: jobs.build.timeout: {DURATION} '10 minutes'",
    ),
    (
        "job timeout bare number",
        job_with("    timeout: 90"),
        f".cicd.yml:4:14: jobs.a.timeout: {DURATION} '90'; add a unit, e.g. 90s",
    ),
    (
        "job timeout null",
        job_with("    timeout:"),
        f".cicd.yml:4:5: jobs.a.timeout: {DURATION} null",
    ),
    (
        "step timeout zero",
        lines(
            "jobs:", "  a:", "    image: x", "    steps:", "      - run: a", "        timeout: 0s"
        ),
        ".cicd.yml:6:18: jobs.a.steps[1].timeout: expected a duration greater than 0, found '0s'",
    ),
    (
        "allow_failure yes",
        job_with("    allow_failure: yes"),
        ".cicd.yml:4:20: jobs.a.allow_failure: expected true or false, found 'yes'; write true",
    ),
    (
        "allow_failure Off",
        job_with("    allow_failure: Off"),
        ".cicd.yml:4:20: jobs.a.allow_failure: expected true or false, found 'Off'; write false",
    ),
    (
        "allow_failure quoted",
        job_with("    allow_failure: 'true'"),
        (
            ".cicd.yml:4:20: jobs.a.allow_failure: expected true or false, found 'true', which is "
            "quoted; remove the quotes"
        ),
    ),
    (
        "allow_failure number",
        lines("jobs:", "  a: {image: x, steps: [{run: a, allow_failure: 1}]}"),
        ".cicd.yml:2:49: jobs.a.steps[1].allow_failure: expected true or false, found '1'",
    ),
    (
        "env value empty",
        with_env("  A:", "  B: x"),
        '.cicd.yml:2:3: env.A: expected a string, found null; quote it ("") for an empty value',
    ),
    (
        "env value tilde",
        with_env("  A: ~"),
        '.cicd.yml:2:6: env.A: expected a string, found null; quote it ("") for an empty value',
    ),
    (
        "env value null word",
        job_with("    env:", "      A: NULL"),
        '.cicd.yml:5:10: jobs.a.env.A: expected a string, found null; quote it ("") for an empty value',
    ),
    (
        "env value list",
        with_env("  A: [1, 2]"),
        ".cicd.yml:2:6: env.A: expected a string, found a list",
    ),
    (
        "env value mapping",
        lines("jobs:", "  a: {image: x, steps: [{run: a, env: {A: {B: c}}}]}"),
        ".cicd.yml:2:43: jobs.a.steps[1].env.A: expected a string, found a mapping",
    ),
    (
        "env name digit",
        with_env("  1A: x"),
        (
            ".cicd.yml:2:3: env: invalid variable name '1A'; use letters, digits and '_', "
            "not starting with a digit"
        ),
    ),
    (
        "env name dash",
        with_env("  MY-VAR: x"),
        (
            ".cicd.yml:2:3: env: invalid variable name 'MY-VAR'; use letters, digits and '_', "
            "not starting with a digit"
        ),
    ),
    (
        "env list",
        "env: [A=1]\n" + MINIMAL,
        ".cicd.yml:1:6: env: expected a mapping of variable names to strings, found a list",
    ),
    (
        "env null",
        "env:\n" + MINIMAL,
        ".cicd.yml:1:1: env: expected a mapping of variable names to strings, found null",
    ),
    (
        "resources key typo",
        job_with("    resources: {mem: 1Gi}"),
        ".cicd.yml:4:17: jobs.a.resources: unknown key 'mem'; did you mean 'memory'?",
    ),
    (
        "resources list",
        job_with("    resources: [1]"),
        ".cicd.yml:4:16: jobs.a.resources: expected a mapping with 'cpu' or 'memory', found a list",
    ),
    (
        "cpu zero",
        job_with("    resources: {cpu: 0}"),
        ".cicd.yml:4:22: jobs.a.resources.cpu: expected a CPU amount greater than 0, found '0'",
    ),
    (
        "cpu words",
        job_with("    resources: {cpu: two}"),
        (
            ".cicd.yml:4:22: jobs.a.resources.cpu: expected a number of CPUs like 0.5 or 2, "
            "or millicores like 500m, found 'two'"
        ),
    ),
    (
        "memory unit",
        job_with("    resources: {memory: 512MB}"),
        (
            ".cicd.yml:4:25: jobs.a.resources.memory: expected a memory size like 512Mi, 1Gi or "
            "1000000 (bytes), found '512MB'; use one of the units Ki, Mi, Gi, Ti (powers of 1024) "
            "or k, M, G, T (powers of 1000)"
        ),
    ),
    (
        "resources gpu",
        job_with("    resources: {gpu: 1}"),
        (
            ".cicd.yml:4:17: jobs.a.resources: unknown key 'gpu'; GPUs are not requested "
            "here: give the nodes that have them a label such as gpu=true, and the job "
            "runs_on: {gpu: 'true'}"
        ),
    ),
    (
        "memory below docker minimum",
        job_with("    resources: {memory: 4Mi}"),
        (
            ".cicd.yml:4:25: jobs.a.resources.memory: '4Mi' is below 6Mi, the least memory "
            "Docker lets a container have; ask for 6Mi or more"
        ),
    ),
    (
        "needs unknown close",
        lines(
            "jobs:",
            f"  build: {{image: x, {STEP}}}",
            f"  test: {{image: x, needs: [biuld], {STEP}}}",
        ),
        ".cicd.yml:3:28: jobs.test.needs: unknown job 'biuld'; did you mean 'build'?",
    ),
    (
        "needs unknown far",
        lines(
            "jobs:",
            f"  build: {{image: x, {STEP}}}",
            f"  test: {{image: x, needs: deploy, {STEP}}}",
        ),
        ".cicd.yml:3:27: jobs.test.needs: unknown job 'deploy'; the jobs are build, test",
    ),
    (
        "needs repeated",
        lines("jobs:", f"  a: {{image: x, {STEP}}}", f"  b: {{image: x, needs: [a, a], {STEP}}}"),
        ".cicd.yml:3:28: jobs.b.needs: job 'a' is listed twice, on lines 3 and 3",
    ),
    (
        "needs mapping",
        lines("jobs:", f"  a: {{image: x, needs: {{b: 1}}, {STEP}}}"),
        ".cicd.yml:2:24: jobs.a.needs: expected a job id or a list of job ids, found a mapping",
    ),
    (
        "needs null entry",
        lines("jobs:", "  a:", "    image: x", "    needs:", "      -", f"    {STEP}"),
        ".cicd.yml:5:8: jobs.a.needs: expected a job id or a list of job ids, found null",
    ),
    (
        "needs itself",
        lines("jobs:", f"  a: {{image: x, needs: [a], {STEP}}}"),
        ".cicd.yml:2:25: jobs.a.needs: cycle a -> a",
    ),
    (
        "cycle of three",
        lines(
            "jobs:",
            f"  a: {{image: x, needs: [b], {STEP}}}",
            f"  b: {{image: x, needs: [c], {STEP}}}",
            f"  c: {{image: x, needs: [a], {STEP}}}",
        ),
        ".cicd.yml:2:25: jobs.a.needs: cycle a -> b -> c -> a",
    ),
    (
        "cycle after a dag",
        lines(
            "jobs:",
            f"  a: {{image: x, needs: [b], {STEP}}}",
            f"  b: {{image: x, needs: [c], {STEP}}}",
            f"  c: {{image: x, needs: [a2, b], {STEP}}}",
            f"  a2: {{image: x, {STEP}}}",
        ),
        ".cicd.yml:3:25: jobs.b.needs: cycle b -> c -> b",
    ),
    (
        "duplicate job",
        lines("jobs:", f"  a: {{image: x, {STEP}}}", f"  a: {{image: y, {STEP}}}"),
        ".cicd.yml:3:3: jobs: duplicate key 'a' on lines 2 and 3",
    ),
    (
        "duplicate step key",
        lines("jobs:", "  a:", "    image: x", "    steps:", "      - run: a", "        run: b"),
        ".cicd.yml:6:9: jobs.a.steps[1]: duplicate key 'run' on lines 5 and 6",
    ),
    (
        "duplicate merge key",
        lines("jobs:", "  a: {<<: {image: x}, <<: {" + STEP + "}}"),
        ".cicd.yml:2:23: jobs.a: duplicate key '<<' on lines 2 and 2",
    ),
    (
        "merge scalar",
        lines("jobs:", "  a:", "    <<: 3"),
        ".cicd.yml:3:9: jobs.a[\"<<\"]: expected a mapping or a list of mappings to merge, found '3'",
    ),
    (
        "merged unknown key",
        lines(
            "jobs:",
            "  a: &base",
            "    image: x",
            f"    {STEP}",
            "  b:",
            "    <<: [*base, {imag: y}]",
        ),
        ".cicd.yml:6:18: jobs.b: unknown key 'imag'; did you mean 'image'?",
    ),
    (
        "complex key",
        "? [a]\n: b\n" + MINIMAL,
        ".cicd.yml:1:3: expected a string key, found a list",
    ),
    (
        "recursive alias",
        lines("jobs: &j", "  a: *j"),
        (
            ".cicd.yml:2:6: jobs.a: alias '*j' is used inside the node it refers to; "
            "recursive aliases are not supported"
        ),
    ),
    (
        "undefined alias",
        "jobs: *nope\n",
        ".cicd.yml:1:7: invalid YAML: found undefined alias 'nope'",
    ),
    (
        "unclosed flow",
        "jobs: [a\n",
        (
            ".cicd.yml:2:1: invalid YAML: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence)"
        ),
    ),
    (
        "tab indent",
        "jobs:\n\ta: 1\n",
        (
            ".cicd.yml:2:1: invalid YAML: found character '\\t' that cannot start any token "
            "(while scanning for the next token)"
        ),
    ),
    (
        "bad indentation",
        "jobs:\n  a: 1\n b: 2\n",
        (
            ".cicd.yml:3:2: invalid YAML: expected <block end>, but found '<block mapping start>' "
            "(while parsing a block mapping)"
        ),
    ),
    (
        "two documents",
        MINIMAL + "---\n" + MINIMAL,
        (
            ".cicd.yml:3:1: invalid YAML: expected a single document in the stream, "
            "but found another document"
        ),
    ),
    (
        "control character",
        "name: a\x07b\n" + MINIMAL,
        (
            ".cicd.yml:1:8: invalid YAML: character U+0007 is not allowed; remove it or write it "
            "as an escape in a double-quoted string"
        ),
    ),
    (
        "version quoted",
        'version: "1"\n' + MINIMAL,
        ".cicd.yml:1:10: version: expected version 1, found '1', which is quoted; write version: 1",
    ),
    (
        "version single quoted",
        "version: '1'\n" + MINIMAL,
        ".cicd.yml:1:10: version: expected version 1, found '1', which is quoted; write version: 1",
    ),
    (
        "lone surrogate in name",
        'name: "a\\ud800b"\n' + MINIMAL,
        f".cicd.yml:1:7: name: string 'a\\ud800b' contains the lone surrogate \\ud800, {SURROGATE_FIX}",
    ),
    (
        "surrogate pair reversed",
        'name: "\\ude00\\ud83d"\n' + MINIMAL,
        (
            ".cicd.yml:1:7: name: string '\\ude00\\ud83d' contains the lone surrogate \\ude00, "
            f"{SURROGATE_FIX}"
        ),
    ),
    (
        "lone surrogate in key",
        'env: {"A\\udc00": x}\n' + MINIMAL,
        f".cicd.yml:1:7: env: key 'A\\udc00' contains the lone surrogate \\udc00, {SURROGATE_FIX}",
    ),
    (
        "pipeline name escape sequence",
        'name: "\\e[31mred"\n' + MINIMAL,
        (
            ".cicd.yml:1:7: name: pipeline name '\\x1b[31mred' contains the control character "
            "U+001B; remove it, because the pipeline name is printed on one line in terminals"
        ),
    ),
    (
        "pipeline name line separator",
        'name: "a\\Lb"\n' + MINIMAL,
        (
            ".cicd.yml:1:7: name: pipeline name 'a\\u2028b' contains the line separator U+2028; "
            "remove it, because the pipeline name is printed on one line in terminals"
        ),
    ),
    (
        "step name carriage return",
        lines("jobs:", '  a: {image: x, steps: [{name: "a\\rb", run: a}]}'),
        (
            ".cicd.yml:2:32: jobs.a.steps[1].name: step name 'a\\rb' contains the control "
            "character U+000D; remove it, because the step name is printed on one line in "
            "terminals"
        ),
    ),
    (
        "label value NUL",
        job_with('    runs_on: {pool: "a\\0"}'),
        (
            ".cicd.yml:4:21: jobs.a.runs_on.pool: label value 'a\\x00' contains the control "
            "character U+0000; remove it, because the label value is printed on one line in "
            "terminals"
        ),
    ),
    (
        "image path traversal",
        lines("jobs:", f"  a: {{image: ../../../etc/passwd, {STEP}}}"),
        (
            f".cicd.yml:2:14: jobs.a.image: {IMAGE} '../../../etc/passwd'; '..' is not a "
            "registry host such as registry.example.com:5000"
        ),
    ),
    (
        "image uppercase",
        lines("jobs:", f"  a: {{image: Debian:bookworm, {STEP}}}"),
        (
            f".cicd.yml:2:14: jobs.a.image: {IMAGE} 'Debian:bookworm'; the repository name "
            "must be lowercase"
        ),
    ),
    (
        "image escape sequence",
        lines("jobs:", f'  a: {{image: "busybox\\e[0m", {STEP}}}'),
        (
            f".cicd.yml:2:14: jobs.a.image: {IMAGE} 'busybox\\x1b[0m'; a repository name is "
            "lowercase letters and digits joined by '.', '_', '__', dashes or '/', starting and "
            "ending with a letter or digit"
        ),
    ),
    (
        "image bad tag",
        lines("jobs:", f"  a: {{image: 'debian:.x', {STEP}}}"),
        (
            f".cicd.yml:2:14: jobs.a.image: {IMAGE} 'debian:.x'; a tag has up to 128 letters, "
            "digits, '_', '.' and '-', not starting with '.' or '-'"
        ),
    ),
    (
        "image short digest",
        lines("jobs:", f"  a: {{image: 'debian@sha256:abc', {STEP}}}"),
        (
            f".cicd.yml:2:14: jobs.a.image: {IMAGE} 'debian@sha256:abc'; a digest is an "
            "algorithm and at least 32 hex digits, such as sha256:<64 hex digits>"
        ),
    ),
    (
        "step name slash",
        lines("jobs:", "  a: {image: x, steps: [{name: a/b, run: a}]}"),
        (
            ".cicd.yml:2:32: jobs.a.steps[1].name: step name 'a/b' contains '/', which the REST "
            "API cannot tell apart from the '/' between parts of a URL; use another character, "
            "such as '-'"
        ),
    ),
    (
        "step name dot",
        lines("jobs:", "  a: {image: x, steps: [{name: ., run: a}]}"),
        (
            ".cicd.yml:2:32: jobs.a.steps[1].name: step name '.' cannot be used, because "
            "browsers and curl remove '.' and '..' from URLs, so the REST API could not address "
            "the step; give another name"
        ),
    ),
    (
        "step name dot dot",
        lines("jobs:", "  a: {image: x, steps: [{name: .., run: a}]}"),
        (
            ".cicd.yml:2:32: jobs.a.steps[1].name: step name '..' cannot be used, because "
            "browsers and curl remove '.' and '..' from URLs, so the REST API could not address "
            "the step; give another name"
        ),
    ),
    (
        "step name too long",
        lines("jobs:", f"  a: {{image: x, steps: [{{name: {'s' * 201}, run: a}}]}}"),
        (
            f".cicd.yml:2:32: jobs.a.steps[1].name: step name '{'s' * 80}'... (201 characters) "
            "is longer than the maximum of 200 characters; shorten it"
        ),
    ),
    (
        "pipeline name too long",
        f"name: {'n' * 201}\n" + MINIMAL,
        (
            f".cicd.yml:1:7: name: pipeline name '{'n' * 80}'... (201 characters) is longer "
            "than the maximum of 200 characters; shorten it"
        ),
    ),
    (
        "long value cut",
        job_with(f"    timeout: {'9' * 1000}x"),
        f".cicd.yml:4:14: jobs.a.timeout: {DURATION} '{'9' * 80}'... (1001 characters)",
    ),
    (
        "long key cut in path",
        "env: {" + "A" * 100 + ": ~}\n" + MINIMAL,
        (
            f'.cicd.yml:1:109: env["{"A" * 80}"...]: expected a string, found null; '
            'quote it ("") for an empty value'
        ),
    ),
    (
        "raw lone surrogate",
        "name: a\udc80\n" + MINIMAL,
        (
            ".cicd.yml:1:8: invalid YAML: character U+DC80 is a lone surrogate, which UTF-8 "
            "cannot encode; remove it or write the character itself"
        ),
    ),
    (
        "nested too deep",
        "jobs: " + "[" * 70 + "]" * 70 + "\n",
        (
            f".cicd.yml:1:70: jobs{'[1]' * 63}: the document is nested deeper than 64 levels, "
            "the maximum; remove the extra levels of lists and mappings"
        ),
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_file(text: str, message: str) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, file=".cicd.yml")
    assert str(caught.value) == message


def test_error_attributes() -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(job_with("    timeout: soon"), file="ci/pipeline.yml")
    error = caught.value
    assert error.file == "ci/pipeline.yml"
    assert error.line == 4
    assert error.column == 14
    assert error.path == "jobs.a.timeout"
    assert error.message == f"{DURATION} 'soon'"
    assert error.code == "PIPELINE-INVALID"


def test_path_quotes_dotted_job_id() -> None:
    text = lines("jobs:", "  build.linux: {image: x, steps: [{run: a, timeout: 5}]}")
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text)
    assert caught.value.path == 'jobs["build.linux"].steps[1].timeout'


def billion_laughs() -> str:
    rows = ['lol0: &lol0 "lol"']
    for level in range(1, 10):
        rows.append(f"lol{level}: &lol{level} [" + ", ".join([f"*lol{level - 1}"] * 9) + "]")
    rows.append("jobs: {a: {image: x, steps: [{run: *lol9}]}}")
    return lines(*rows)


def test_billion_laughs_rejected() -> None:
    # Expanded, this file has about 9**9 nodes. The node limit stops the expansion
    # after 100,000 of them. That took about 0.1 s on one AMD EPYC core, and anything
    # under one second would be fine.
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(billion_laughs(), file="bomb.yml")
    assert str(caught.value) == (
        "bomb.yml:7:14: lol6[1]: expanding alias '*lol5' makes the document larger than "
        "100000 nodes; repeat less through aliases"
    )


def test_many_nodes_without_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real limit needs a file of about 600 kB, which ruamel.yaml takes seconds to read.
    monkeypatch.setattr(parser, "MAX_NODES", 100)
    text = "env: {" + ", ".join(f"V{index}: x" for index in range(60)) + "}\n" + MINIMAL
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text)
    assert caught.value.message == (
        "the document has more than 100 nodes, the maximum; shorten it, for example by moving "
        "long lists of commands into a script in the repository"
    )
    assert caught.value.line == 1
    assert caught.value.path == "env.V48"


def test_nested_too_deep_through_alias() -> None:
    rows = ["x: &deep " + "[" * 40 + "]" * 40, "jobs:", "  a:", "    image: x",
            "    steps: [{run: a, env: " + "[" * 30 + "*deep" + "]" * 30 + "}]"]
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(lines(*rows), file=".cicd.yml")
    assert caught.value.message == (
        "the document is nested deeper than 64 levels, the maximum; "
        "remove the extra levels of lists and mappings"
    )
    assert caught.value.path == "jobs.a.steps[1].env" + "[1]" * 59
    assert (caught.value.line, caught.value.column) == (1, 39)


def test_merge_bomb_rejected() -> None:
    rows = ["jobs:", "  a: &m0", "    image: x", f"    {STEP}"]
    for level in range(1, 12):
        rows.append(f"  m{level}: &m{level}")
        rows.append("    <<: [" + ", ".join([f"*m{level - 1}"] * 8) + "]")
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(lines(*rows))
    assert "makes the document larger than 100000 nodes" in caught.value.message


def test_file_over_one_mebibyte() -> None:
    text = MINIMAL + "#" * (1024 * 1024)
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, file="big.yml")
    assert str(caught.value) == (
        "big.yml: the file has more than 1048576 bytes (1 MiB), the maximum for a pipeline"
    )


def test_file_of_one_mebibyte_accepted() -> None:
    text = MINIMAL + "#" * (1024 * 1024 - len(MINIMAL) - 1) + "\n"
    assert len(text.encode()) == 1024 * 1024
    assert list(parse_pipeline(text).jobs) == ["a"]


def test_size_counts_utf8_bytes() -> None:
    text = MINIMAL + "# " + "é" * (1024 * 512)
    with pytest.raises(PipelineError, match="more than 1048576 bytes"):
        parse_pipeline(text)


def test_invalid_utf8() -> None:
    data = b"name: caf\xc3\xa9\njobs:\n  a: \xff\n"
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(data, file="x.yml")
    assert str(caught.value) == (
        "x.yml:3:6: invalid UTF-8 at byte offset 23 (byte 0xff); save the file as UTF-8"
    )


def test_bytes_with_bom() -> None:
    pipeline = parse_pipeline(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert list(pipeline.jobs) == ["a"]


def test_load_pipeline(tmp_path: Path) -> None:
    path = tmp_path / ".cicd.yml"
    path.write_text(EXAMPLE, encoding="utf-8")
    pipeline = load_pipeline(path)
    assert pipeline.source_file == str(path)
    assert list(pipeline.jobs) == ["build", "lint", "deploy"]


def test_load_pipeline_missing(tmp_path: Path) -> None:
    path = tmp_path / ".cicd.yml"
    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)
    assert str(caught.value) == (
        f"{path}: pipeline file not found; create it (docs/pipeline.md describes the format) "
        "or give the path of another pipeline file"
    )


def test_load_pipeline_directory(tmp_path: Path) -> None:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read the pipeline file: Is a directory"


def test_load_pipeline_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    path.write_bytes(MINIMAL.encode() + b"#" * (2 * 1024 * 1024))
    with pytest.raises(PipelineError, match="more than 1048576 bytes"):
        load_pipeline(path)


def test_load_pipeline_errors_name_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("jobs: {}\n", encoding="utf-8")
    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)
    assert str(caught.value).startswith(f"{path}:1:7: jobs: ")


# (case id, file text with TEXT where the string goes, key path of the error)
STRING_PLACES: list[tuple[str, str, str]] = [
    ("name", 'name: "TEXT"\n' + MINIMAL, "name"),
    ("top-level key", '"TEXT": x\n' + MINIMAL, ""),
    ("env value", 'env: {A: "TEXT"}\n' + MINIMAL, "env.A"),
    ("env name", 'env: {"TEXT": x}\n' + MINIMAL, "env"),
    ("job id", lines("jobs:", f'  "TEXT": {{image: x, {STEP}}}'), "jobs"),
    ("image", lines("jobs:", f'  a: {{image: "TEXT", {STEP}}}'), "jobs.a.image"),
    ("run", lines("jobs:", '  a: {image: x, steps: [{run: "TEXT"}]}'), "jobs.a.steps[1].run"),
    (
        "step name",
        lines("jobs:", '  a: {image: x, steps: [{name: "TEXT", run: a}]}'),
        "jobs.a.steps[1].name",
    ),
    ("needs", job_with('    needs: ["TEXT"]'), "jobs.a.needs[1]"),
    ("label value", job_with('    runs_on: {pool: "TEXT"}'), "jobs.a.runs_on.pool"),
    ("timeout", job_with('    timeout: "TEXT"'), "jobs.a.timeout"),
    ("retry when", job_with('    retry: {max: 1, when: ["TEXT"]}'), "jobs.a.retry.when[1]"),
]


@pytest.mark.parametrize(
    ("template", "path"), [case[1:] for case in STRING_PLACES], ids=[case[0] for case in STRING_PLACES]
)
@pytest.mark.parametrize("escaped", ["\\ud800", "x\\udfffy", "\\ud83d", "\\ude00\\ud83d"])
def test_lone_surrogate_rejected_everywhere(template: str, path: str, escaped: str) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(template.replace("TEXT", escaped))
    assert "contains the lone surrogate" in caught.value.message
    assert caught.value.path == path
    assert str(caught.value).encode("utf-8")


# (case id, file text with TEXT where the name goes, key path of the error)
NAME_PLACES: list[tuple[str, str, str]] = [
    ("pipeline name", 'name: "aTEXTb"\n' + MINIMAL, "name"),
    (
        "step name",
        lines("jobs:", '  a: {image: x, steps: [{name: "aTEXTb", run: a}]}'),
        "jobs.a.steps[1].name",
    ),
    ("image", lines("jobs:", f'  a: {{image: "busyboxTEXT", {STEP}}}'), "jobs.a.image"),
    ("label value", job_with('    runs_on: {pool: "aTEXTb"}'), "jobs.a.runs_on.pool"),
]


@pytest.mark.parametrize(
    ("template", "path"), [case[1:] for case in NAME_PLACES], ids=[case[0] for case in NAME_PLACES]
)
@pytest.mark.parametrize(
    "escaped", ["\\e[31m", "\\r", "\\n", "\\t", "\\a", "\\0", "\\x7f", "\\x85", "\\x9b", "\\P"]
)
def test_control_character_rejected(template: str, path: str, escaped: str) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(template.replace("TEXT", escaped))
    assert caught.value.path == path
    assert str(caught.value).isprintable()


def test_huge_value_cut_in_error() -> None:
    image = "A" * 800_000
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(lines("jobs:", f"  a: {{image: {image}, {STEP}}}"), file=".cicd.yml")
    assert len(str(caught.value)) < 400
    assert f"found '{'A' * 80}'... (800000 characters)" in caught.value.message


def test_undefined_alias_name_cut_in_error() -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline("jobs: *" + "n" * 100_000 + "\n")
    assert caught.value.message.startswith("invalid YAML: found undefined alias 'nnn")
    assert len(caught.value.message) < 400


STEPS_JOB = lines(
    "jobs:",
    "  a:",
    "    image: x",
    "    steps:",
    "      - name: compile",
    "        run: make",
    "      - run: |",
    "",
    "          python3 -m pytest -q",
    "          echo done",
    "      - run: " + "x" * 70,
    "      - run: make",
    "      - name: two",
    "        run: echo two",
)


def test_display_names() -> None:
    steps = parse_pipeline(STEPS_JOB).jobs["a"].steps
    assert [step.display_name for step in steps] == [
        "compile",
        "python3 -m pytest -q",
        "x" * 57 + "...",
        "make",
        "two",
    ]
    assert len(steps[2].display_name) == 60


def test_find_step_by_each_reference() -> None:
    job = parse_pipeline(STEPS_JOB).jobs["a"]
    assert job.find_step("compile").index == 1
    assert job.find_step("3").index == 3
    assert job.find_step("python3 -m pytest -q").index == 2
    assert job.find_step("make").index == 4


def test_find_step_number_is_index() -> None:
    # An unnamed step's display name may be a number: the index goes first.
    job = parse_pipeline(lines("jobs:", "  a: {image: x, steps: [{run: make}, {run: '1'}]}")
                         ).jobs["a"]
    assert job.find_step("1").index == 1
    assert job.find_step("2").index == 2


def test_find_step_not_found() -> None:
    job = parse_pipeline(
        lines("jobs:", "  a: {image: x, steps: [{name: build, run: make}, {run: ls}]}")
    ).jobs["a"]
    with pytest.raises(LookupError) as caught:
        job.find_step("test")
    assert str(caught.value) == "job 'a' has no step 'test'. Steps: 1 'build', 2 'ls'"
    with pytest.raises(LookupError):
        job.find_step("3")
    with pytest.raises(LookupError):
        job.find_step("0")


def test_find_step_ambiguous_display_name() -> None:
    job = parse_pipeline(
        lines("jobs:", "  a: {image: x, steps: [{run: make}, {run: ls}, {run: make}]}")
    ).jobs["a"]
    with pytest.raises(LookupError) as caught:
        job.find_step("make")
    assert str(caught.value) == (
        "step 'make' of job 'a' is ambiguous: steps 1, 3 have that display name; "
        "use the step index instead. Steps: 1 'make', 2 'ls', 3 'make'"
    )
    assert job.find_step("3").index == 3


def test_effective_env_precedence() -> None:
    text = lines(
        "env: {A: pipeline, B: pipeline, C: pipeline}",
        "jobs:",
        "  a:",
        "    image: x",
        "    env: {B: job, C: job}",
        "    steps: [{run: a, env: {C: step}}]",
    )
    pipeline = parse_pipeline(text)
    job = pipeline.jobs["a"]
    assert effective_env(pipeline, job, job.steps[0]) == {"A": "pipeline", "B": "job", "C": "step"}


def test_model_is_frozen() -> None:
    pipeline = parse_pipeline(MINIMAL)
    with pytest.raises(AttributeError):
        pipeline.jobs["a"].image = "other"  # type: ignore[misc]


# Plain scalars that YAML 1.1 or 1.2 would resolve to numbers, booleans or dates, and
# ordinary words: all must reach env as written.
plain_texts = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+]{0,15}", fullmatch=True).filter(
    lambda text: text not in {"null", "Null", "NULL"}
)


@settings(max_examples=200)
@given(plain_texts)
def test_env_plain_scalar_kept_as_written(text: str) -> None:
    assert parse_pipeline(with_env(f"  A: {text}")).env == {"A": text}


printable_texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn", "Cf", "Zl", "Zp")),
    max_size=40,
)


@settings(max_examples=200)
@given(printable_texts)
def test_env_double_quoted_round_trip(text: str) -> None:
    quoted = json.dumps(text, ensure_ascii=False)
    assert parse_pipeline(with_env(f"  A: {quoted}")).env == {"A": text}


@settings(max_examples=200)
@given(printable_texts.filter(lambda text: text.strip() != ""))
def test_run_block_scalar_round_trip(text: str) -> None:
    body = text.replace("\n", " ").strip()
    document = lines(
        "jobs:", "  a:", "    image: x", "    steps:", "      - run: |-", f"          {body}"
    )
    assert parse_pipeline(document).jobs["a"].steps[0].run == body


job_ids = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}", fullmatch=True)


@settings(max_examples=200)
@given(st.lists(job_ids, min_size=1, max_size=6, unique=True), st.data())
def test_generated_needs_parse_in_order(ids: list[str], data: st.DataObject) -> None:
    rows = ["jobs:"]
    expected_needs = {}
    for position, job_id in enumerate(ids):
        needs = (
            data.draw(st.lists(st.sampled_from(ids[:position]), unique=True)) if position else []
        )
        expected_needs[job_id] = tuple(needs)
        rows.append(f"  {json.dumps(job_id)}: {{image: x, needs: {json.dumps(needs)}, {STEP}}}")
    pipeline = parse_pipeline(lines(*rows))
    assert list(pipeline.jobs) == ids
    assert {job_id: job.needs for job_id, job in pipeline.jobs.items()} == expected_needs
    assert pipeline.topological_order() == ids


@settings(max_examples=200)
@given(st.text(alphabet=string.ascii_letters + string.digits + "_-. ", min_size=1, max_size=70))
def test_job_id_rule(job_id: str) -> None:
    text = lines("jobs:", f"  {json.dumps(job_id)}: {{image: x, {STEP}}}")
    valid = len(job_id) <= 63 and job_id[0] not in "-." and " " not in job_id
    if valid:
        assert list(parse_pipeline(text).jobs) == [job_id]
    else:
        with pytest.raises(PipelineError, match="job id"):
            parse_pipeline(text)


def test_load_pipeline_rejects_named_pipe(tmp_path: Path) -> None:
    # Opening a named pipe for reading would wait for a writer: the check comes first.
    fifo = tmp_path / "pipe.yml"
    os.mkfifo(fifo)
    with pytest.raises(PipelineError, match="is not a regular file"):
        load_pipeline(fifo)


@pytest.mark.parametrize(("text", "where"), [
    ('jobs:\n  a:\n    image: x\n    env: {X: "a\\0b"}\n    steps: [{run: echo}]\n', "jobs.a.env.X"),
    ('env: {X: "\\0"}\njobs:\n  a:\n    image: x\n    steps: [{run: echo}]\n', "env.X"),
    ('jobs:\n  a:\n    image: x\n    steps: [{run: "echo \\0"}]\n', "jobs.a.steps[1].run"),
])
def test_nul_in_command_or_environment_rejected(text: str, where: str) -> None:
    # The local executor raised "embedded null byte" from deep inside a run; the
    # Docker engine refused the container. The file is now rejected up front.
    with pytest.raises(PipelineError, match="contains a NUL character") as caught:
        parse_pipeline(text, file=".cicd.yml")
    assert f": {where}: " in str(caught.value)


def test_quoted_priority_says_quoted() -> None:
    text = 'priority: "5"\njobs:\n  a:\n    image: x\n    steps: [{run: x}]\n'
    with pytest.raises(PipelineError, match="found '5', which is quoted; remove the quotes"):
        parse_pipeline(text, file=".cicd.yml")


def test_find_step_cuts_a_long_reference() -> None:
    pipeline = parse_pipeline("jobs:\n  a:\n    image: x\n    steps: [{run: x}]\n",
                              file=".cicd.yml")
    with pytest.raises(LookupError) as caught:
        pipeline.jobs["a"].find_step("s" * 100_000)
    assert len(str(caught.value)) < 300
    assert "(100000 characters)" in str(caught.value)

"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s bench`.

Sessions reuse the interpreter's installed packages (`venv_backend="none"`),
because the test images and the Docker engine live outside any virtualenv.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Run the test suite (needs `bash .ci/docker-setup` or a running engine)."""
    session.run("python3", "-m", "pytest", *session.posargs)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """Run ruff and mypy."""
    session.run("ruff", "check", "cicd", "tests", "benchmarks")
    session.run("mypy", "cicd")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Run the benchmarks and write their report (see docs/benchmarks.md)."""
    session.run("python3", "-m", "benchmarks", *session.posargs)

"""gitlab-ci-local 4.60.0 running the same one-step and ten-step pipelines.

gitlab-ci-local (the npm package) runs a ``.gitlab-ci.yml`` with the Docker CLI. It
needs a git repository, so each pipeline gets a temporary one. The benchmark installs
the package into ``benchmarks/.tools`` with npm when it is missing.

Nothing is pulled: ``--pull-policy if-not-present`` uses the local busybox image, and
``--helper-image busybox:latest`` replaces the default helper image
(docker.io/firecow/gitlab-ci-local-util). In 4.60.0 the helper container runs
``sh -c "chown ... && chmod ..."`` over the build volume and /tmp, so busybox (sh,
chown, chmod and a /tmp directory) is enough. The helper also needs bash and rsync
for copying cache and artifacts out, which these pipelines do not use. On the host,
gitlab-ci-local needs git and rsync: it copies the tracked files with rsync.

gitlab-ci-local runs a job's whole ``script:`` list as one shell script in one
container, so the ten-step pipeline is one job with ten ``script:`` lines in one
container, where cicd starts ten containers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

from benchmarks.measure import (
    IMAGE,
    REPO_ROOT,
    BenchmarkError,
    Case,
    Difference,
    Plan,
    docker_api,
    run_checked,
    run_output,
)

NAME = "gitlab-ci-local"
TITLE = "gitlab-ci-local 4.60.0: one-step and ten-step jobs"

VERSION = "4.60.0"
TOOLS_DIR = REPO_ROOT / "benchmarks" / ".tools"
PACKAGE_DIR = TOOLS_DIR / "node_modules" / "gitlab-ci-local"
ENTRY_POINT = PACKAGE_DIR / "src" / "index.js"


def wall_label(steps: int) -> str:
    text = "1 script line" if steps == 1 else f"{steps} script lines"
    return f"gitlab-ci-local, 1 job of {text}: process wall time"


def gitlab_ci_yaml(steps: int) -> str:
    """Return a pipeline of one job that runs ``true`` ``steps`` times on busybox."""
    lines = ["bench:", f"  image: {IMAGE}", "  script:"] + ['    - "true"'] * steps
    return "\n".join(lines) + "\n"


def installed_version() -> str | None:
    try:
        manifest = json.loads((PACKAGE_DIR / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(manifest.get("version"))


def ensure_installed() -> None:
    """Install gitlab-ci-local VERSION into TOOLS_DIR unless it is there already."""
    if installed_version() == VERSION and ENTRY_POINT.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BenchmarkError("npm is not on PATH; install Node.js and npm (Debian: nodejs npm)")
    print(f"benchmarks: installing gitlab-ci-local@{VERSION} into {TOOLS_DIR} "
          "(takes a minute or two: re2 compiles)", flush=True)
    run_checked([npm, "install", "--prefix", str(TOOLS_DIR), "--no-audit", "--no-fund",
                 f"gitlab-ci-local@{VERSION}"], timeout=900)
    if installed_version() != VERSION:
        raise BenchmarkError(f"npm install finished, but {PACKAGE_DIR} does not contain "
                             f"gitlab-ci-local {VERSION} (found {installed_version()})")


def make_repository(path: Path, steps: int, git: str) -> None:
    """Create a git repository at ``path`` with the pipeline committed."""
    path.mkdir()
    (path / ".gitlab-ci.yml").write_text(gitlab_ci_yaml(steps), encoding="utf-8")
    run_checked([git, "init", "-q"], cwd=path)
    run_checked([git, "config", "user.name", "benchmark"], cwd=path)
    run_checked([git, "config", "user.email", "benchmark@localhost"], cwd=path)
    run_checked([git, "add", ".gitlab-ci.yml"], cwd=path)
    run_checked([git, "commit", "-q", "-m", "Add the benchmark pipeline"], cwd=path)


def plan(stack: ExitStack) -> Plan:
    missing = [tool for tool in ("node", "git", "rsync") if shutil.which(tool) is None]
    if missing:
        raise BenchmarkError(f"gitlab-ci-local needs {', '.join(missing)} on PATH "
                             "(Debian: apt-get install nodejs git rsync)")
    node, git = str(shutil.which("node")), str(shutil.which("git"))
    docker_api().close()  # fails early when the engine or the image is missing
    ensure_installed()

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gitlab-ci-local-bench-")))
    cases: list[Case] = []
    for steps in (1, 10):
        repository = tmp / f"repo-{steps}"
        make_repository(repository, steps, git)
        argv = [node, str(ENTRY_POINT), "--pull-policy", "if-not-present",
                "--helper-image", IMAGE, "--no-color"]
        cases.append(_gitlab_ci_local_case(argv, repository, steps))

    return Plan(
        NAME, TITLE, cases,
        differences=[Difference(
            "gitlab-ci-local, per script line ((10 - 1) / 9): process wall time",
            wall_label(10), wall_label(1), 9)],
        notes=[
            (f"gitlab-ci-local {VERSION} on Node.js {_node_version(node)}, run as "
             f"`gitlab-ci-local --pull-policy if-not-present --helper-image {IMAGE} --no-color` "
             "in a temporary git repository."),
            "Its ten-step job is ten `script:` lines in one container.",
        ],
    )


def _gitlab_ci_local_case(argv: list[str], repository: Path, steps: int) -> Case:
    def case() -> dict[str, float]:
        return {wall_label(steps): _run_without_pull(argv, repository, steps)}
    return case


def _run_without_pull(argv: list[str], repository: Path, steps: int) -> float:
    """Run gitlab-ci-local once; check that the job passed, ran every line and pulled nothing."""
    seconds, output = run_output(argv, cwd=repository)
    if "PASS" not in output:
        raise BenchmarkError(f"gitlab-ci-local exited 0 but reported no PASS:\n{output}")
    if "pulled" in output:
        raise BenchmarkError(f"gitlab-ci-local pulled an image, so its time is invalid:\n{output}")
    log = (repository / ".gitlab-ci-local" / "output" / "bench.log").read_text(
        encoding="utf-8", errors="replace")
    if log.count("$ true") != steps:
        raise BenchmarkError(f"the job log of gitlab-ci-local shows {log.count('$ true')} of "
                             f"{steps} script lines:\n{log}")
    return seconds


def _node_version(node: str) -> str:
    proc = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"

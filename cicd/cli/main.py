"""The ``cicd`` command: argument parsing and dispatch to the subcommands.

Exit status: 0 success, 1 the pipeline failed, 2 invalid pipeline or usage
(or no engine to run it on), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from cicd import __version__
from cicd.errors import CicdError, SchemaTooNewError, StorageError, UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cicd", description="A self-hosted CI/CD server: pipelines in Docker containers.")
    parser.add_argument("--version", action="version", version=f"cicd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: info, -vv: debug) to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    db_help = "SQLite database file (default: $CICD_DB or ~/.local/share/cicd/cicd.db)"

    run = sub.add_parser("run", help="run a pipeline on this machine")
    run.add_argument("path", nargs="?", default=".",
                     help="directory to build; each job gets a fresh copy (default: .)")
    run.add_argument("-f", "--file", help="pipeline file (default: PATH/.cicd.yml)")
    run.add_argument("--executor", choices=["docker", "local", "auto"], default="docker",
                     help="where steps run: docker containers (default), local processes, "
                     "or auto (docker when an engine answers, else local)")
    run.add_argument("--parallel", type=_positive_int,
                     help="jobs to run at once (default: number of CPUs); with --config, "
                     "each node's max_jobs applies instead")
    run.add_argument("--grace", type=_seconds, default=10.0,
                     help="seconds between SIGTERM and SIGKILL when a step is stopped (default 10)")
    run.add_argument("--db", help=db_help)
    run.add_argument("--config", metavar="FILE",
                     help="server configuration whose [[nodes]] and [scheduling] to use "
                     "(default: the local engine as the only node)")
    run.add_argument("--report", metavar="FILE", help="write the run document as JSON to FILE")
    run.add_argument("--no-color", action="store_true", help="never colour the output")
    run.add_argument("-q", "--quiet", action="store_true", help="do not print step output live")

    validate = sub.add_parser("validate", help="check a pipeline file without running it")
    validate.add_argument("file", nargs="?", default=".cicd.yml", help="default: .cicd.yml")

    server_help = (
        "URL of a cicd server (default: $CICD_SERVER, unless --db is given); without one, "
        "read --db")

    serve = sub.add_parser("serve", help="run the cicd server (REST API and WebSocket)")
    serve.add_argument("--config", help="TOML configuration file (see docs/configuration.md)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8470; 0: any free)")
    serve.add_argument("--db", help=db_help)
    serve.add_argument("--executor", choices=["docker", "local"],
                       help="where steps run (default docker)")

    submit = sub.add_parser("submit", help="submit a pipeline run to a server")
    submit.add_argument("file", nargs="?", default=".cicd.yml",
                        help="pipeline file here, or a path inside a git source (default .cicd.yml)")
    submit.add_argument("--source", help="directory on the server (default: .) or git URL")
    submit.add_argument("--ref", help="git branch, tag or commit (with a git --source)")
    submit.add_argument("--tenant", default="default", help="tenant of the run (default: default)")
    submit.add_argument("--priority", type=int, metavar="N",
                        help="-1000 to 1000; higher goes first when jobs wait for nodes "
                        "(default: the pipeline's priority)")
    submit.add_argument("--idempotency-key", help="submitting the same key again returns the same run")
    submit.add_argument("--wait", action="store_true", help="wait for the run to end; exit 1 if it failed")
    submit.add_argument("--server", help="URL of the cicd server (default: $CICD_SERVER)")
    submit.add_argument("--json", action="store_true", help="print the run document as JSON")

    cancel = sub.add_parser("cancel", help="cancel a run (or one job) on a server")
    cancel.add_argument("run", help="run id, id prefix, PIPELINE#NUMBER or 'last'")
    cancel.add_argument("--job", help="cancel only this job")
    cancel.add_argument("--server", help="URL of the cicd server (default: $CICD_SERVER)")

    retry = sub.add_parser("retry", help="rerun the jobs of a run that did not succeed")
    retry.add_argument("run", help="run id, id prefix, PIPELINE#NUMBER or 'last'")
    retry.add_argument("--wait", action="store_true", help="wait for the new run to end; exit 1 if it failed")
    retry.add_argument("--server", help="URL of the cicd server (default: $CICD_SERVER)")
    retry.add_argument("--json", action="store_true", help="print the new run's document as JSON")

    node_server_help = "server URL (default: $CICD_SERVER)"
    nodes = sub.add_parser("nodes", help="list a server's nodes: capacity, jobs, breaker")
    nodes.add_argument("--server", help=node_server_help)
    nodes.add_argument("--json", action="store_true", help="print JSON")
    for action, text in (("cordon", "take no new jobs on a node; running jobs go on"),
                         ("drain", "cordon a node; it shows drained once its jobs ended"),
                         ("uncordon", "let a cordoned or drained node take jobs again")):
        node_action = sub.add_parser(action, help=text)
        node_action.add_argument("name", help="node name, as `cicd nodes` lists it")
        node_action.add_argument("--server", help=node_server_help)

    rebuild = sub.add_parser(
        "rebuild-projections",
        help="rebuild the runs, jobs and steps tables from the event log (server stopped)")
    rebuild.add_argument("--db", help=db_help)

    dead = sub.add_parser("dead-letters", help="list events a subscriber failed to handle, or "
                          "replay one on a server")
    dead.add_argument("--db", help=db_help)
    dead.add_argument("--replay", type=int, metavar="ID", help="replay this dead letter")
    dead.add_argument("--server", help=server_help)

    runs = sub.add_parser("runs", help="list past runs")
    runs.add_argument("--db", help=db_help)
    runs.add_argument("--server", help=server_help)
    runs.add_argument("-n", "--limit", type=_positive_int, default=20, help="runs to show")
    runs.add_argument("--json", action="store_true", help="print JSON")

    show = sub.add_parser("show", help="show one run with its jobs and steps")
    show.add_argument("run", help="run id, id prefix, PIPELINE#NUMBER or 'last'")
    show.add_argument("--db", help=db_help)
    show.add_argument("--server", help=server_help)
    show.add_argument("--json", action="store_true", help="print the run document as JSON")

    logs = sub.add_parser("logs", help="print the stored output of a run, a job or a step")
    logs.add_argument("run", help="run id, id prefix, PIPELINE#NUMBER or 'last'")
    logs.add_argument("target", nargs="?", help="JOB or JOB/STEP (step name or 1-based index)")
    logs.add_argument("--db", help=db_help)
    logs.add_argument("--server", help=server_help)
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing output as it arrives, after waiting for a pending "
                      "run to start (needs a server)")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, like 10 or 2.5, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {value}")
    return value


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, for the imports of a subcommand.

    Imports allocate many long-lived objects and almost no garbage, yet with the
    default threshold a collection starts after every 700 net allocations: 80 of them
    while `cicd run` imports its modules (CPython 3.11). The previous state is restored.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    from cicd.terminal import PrintableStream

    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = PrintableStream(stdout)
    sys.stderr = PrintableStream(stderr)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    if args.command == "serve" and args.verbose == 0:
        level = logging.INFO  # a server logs its start, its requests and its runs
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            with _collector_paused():
                if args.executor != "local" and not args.config:
                    from cicd.workers.docker import connect_soon

                    # The engine handles the client's first request, GET /version,
                    # while the rest of `cicd run` is imported.
                    connect_soon()
                from cicd.cli.run_command import run_command

            return run_command(args)
        if args.command == "validate":
            from cicd.cli.validate_command import validate_command

            return validate_command(args)
        if args.command == "serve":
            with _collector_paused():
                from cicd.cli.serve_command import serve_command

            return serve_command(args)
        if args.command in ("rebuild-projections", "dead-letters"):
            from cicd.cli import maintenance

            return int(getattr(maintenance, args.command.replace("-", "_") + "_command")(args))
        if args.command in ("nodes", "cordon", "drain", "uncordon"):
            from cicd.cli import client

            return client.nodes_command(args)
        if args.command in ("submit", "cancel", "retry"):
            from cicd.cli import client

            return int(getattr(client, f"{args.command}_command")(args))
        from cicd.cli import client, history

        url = client.server_url(args)
        if url:
            return int(getattr(client, f"remote_{args.command}")(args, url))
        if getattr(args, "follow", False):
            raise UsageError("logs -f follows a live run on a server: pass --server or set "
                             "CICD_SERVER")
        return int(getattr(history, f"{args.command}_command")(args))
    except CicdError as exc:
        print(f"cicd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    except BaseExceptionGroup as group:
        # A CicdError raised inside trio.run (a database that is too new, say) arrives
        # wrapped in groups of one: report it as if it had been raised directly.
        error = _only_error(group)
        if not isinstance(error, CicdError):
            raise
        print(f"cicd: error: {error}", file=sys.stderr)
        if isinstance(error, StorageError) and not isinstance(error, SchemaTooNewError):
            return EXIT_FAILED  # the database failed while in use (a full disk, say)
        return EXIT_USAGE


def _only_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """Return the one exception inside ``group`` and its nested groups, or None when
    there are several."""
    if len(group.exceptions) != 1:
        return None
    inner = group.exceptions[0]
    return _only_error(inner) if isinstance(inner, BaseExceptionGroup) else inner


def entry() -> NoReturn:
    """Run ``main`` and exit with its status: the ``cicd`` command and ``python3 -m cicd``."""
    status = main()
    # At exit the interpreter runs a full collection over every object left, which took
    # 20-40 ms after `cicd run` on the benchmark machine. The collection skips frozen
    # objects, and the operating system frees their memory. atexit handlers still run.
    gc.freeze()
    raise SystemExit(status)

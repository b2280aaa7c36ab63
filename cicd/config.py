"""Server configuration: a TOML file, then ``CICD_*`` environment variables, then flags.

Each key is ``section.key`` in the file and ``CICD_SECTION_KEY`` in the
environment (``server.port`` is ``CICD_SERVER_PORT``). docs/configuration.md
lists every key with its unit and default.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from cicd.errors import UsageError
from cicd.pipeline.quantities import parse_duration, parse_memory


class ServerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8470
    # Host names (and addresses) this server answers to; requests with another
    # Host or Origin are rejected, which defeats DNS rebinding.
    server_names: list[str] = msgspec.field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"])


class StorageSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    db: str = ""  # default: $CICD_DB or ~/.local/share/cicd/cicd.db
    data_dir: str = ""  # workspaces of git sources; default: beside the database
    log_limit: str = "100M"  # per step; the head and the tail are kept


class RunSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    executor: str = "docker"  # docker, or local (steps as host processes; no images)
    intake_size: int = 1000  # accepted runs waiting to start; beyond it, 429
    max_parallel_jobs: int = 0  # jobs running at once on the node; 0: number of CPUs
    per_tenant_runs: int = 8  # runs of one tenant running at once; more wait in order
    grace: str = "10s"  # SIGTERM to SIGKILL for a stopped step
    shutdown_grace: str = "30s"  # time running steps get to finish on SIGTERM


class DockerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = ""  # default: $DOCKER_HOST or unix:///var/run/docker.sock


class NodeSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One Docker engine the scheduler places jobs on (a ``[[nodes]]`` table)."""

    name: str
    host: str  # unix:///var/run/docker.sock, tcp://host:2376, ssh://user@host
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    cpu: str | float = ""  # capacity override (8, "7500m"); default: read from the engine
    memory: str = ""  # capacity override ("16G"); default: read from the engine
    reserve_cpu: str | float = ""  # kept free for the engine and other work (1, "500m")
    reserve_memory: str = ""  # ("2G")
    max_jobs: int = 0  # jobs at once; 0: the engine's CPU count
    tls_ca: str = ""  # tcp:// with TLS: CA certificate file to verify the engine
    tls_cert: str = ""  # client certificate and key files
    tls_key: str = ""
    tls_verify: bool = True


class PoolSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    policy: str = ""  # the pool's own policy; default: scheduling.policy
    backfill: bool | None = None


class SchedulingSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    policy: str = "fifo"  # fifo, binpack or spread
    backfill: bool = False  # binpack and spread: later jobs run beside a waiting large one
    aging_interval: str = "1m"  # each interval waited raises a job's priority by one
    per_tenant_jobs: int = 0  # jobs of one tenant running at once across nodes; 0: no limit
    default_cpu: str = ""  # request of a job without resources.cpu; "": none
    default_memory: str = ""  # request of a job without resources.memory; "": none
    probe_interval: str = "5s"  # how often each node's engine is asked for health and capacity
    breaker_error_rate: float = 0.5  # failed share of recent calls that opens a node's breaker
    breaker_window: int = 10  # recent calls counted
    breaker_min_calls: int = 3  # calls needed before the rate counts
    breaker_open_for: str = "30s"  # then one probe decides (half-open)
    # A job lost with its node starts again (retry) once the node is back and fenced.
    # A duration here also lets it start again after that long without the node.
    node_lost_after: str = ""
    # Pools: nodes with the label pool=<name>; jobs with runs_on {pool: <name>} use
    # the pool's policy.
    pools: dict[str, PoolSettings] = msgspec.field(default_factory=dict)


class RetentionSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max_age: str = "30d"  # logs and workspaces of runs older than this are removed
    max_runs_per_pipeline: int = 200  # keep logs of this many newest runs per pipeline
    max_total_log_size: str = "10G"  # then the oldest runs' logs go first
    interval: str = "10m"  # how often the policy runs
    reaper_interval: str = "1m"  # how often leftover Docker objects are removed


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    runs: RunSettings = msgspec.field(default_factory=RunSettings)
    docker: DockerSettings = msgspec.field(default_factory=DockerSettings)
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
    scheduling: SchedulingSettings = msgspec.field(default_factory=SchedulingSettings)
    # Empty: one node, the engine of docker.host (or the local host with runs.executor=local).
    nodes: list[NodeSettings] = msgspec.field(default_factory=list)

    # Values in the units the code uses.
    def seconds(self, value: str) -> float:
        return _duration_with_days(value)

    def optional_seconds(self, value: str) -> float | None:
        """Seconds of a configured duration; None for an empty value."""
        return _duration_with_days(value) if value else None

    @staticmethod
    def cpu_millis(value: str | float) -> int:
        """Millicores of a configured CPU amount; 0 for an empty value."""
        from cicd.pipeline.quantities import parse_cpu

        return parse_cpu(value) if value not in ("", 0) else 0

    @staticmethod
    def memory_bytes(value: str) -> int:
        """Bytes of a configured memory size; 0 for an empty value."""
        return parse_memory(value) if value else 0

    @property
    def log_limit_bytes(self) -> int:
        return parse_memory(self.storage.log_limit)


def _duration_with_days(text: str) -> float:
    text = text.strip()
    if text.endswith("d") and text[:-1].isdigit():
        return int(text[:-1]) * 86400.0
    return parse_duration(text)


_DURATION_KEYS = {("runs", "grace"), ("runs", "shutdown_grace"), ("retention", "max_age"),
                  ("retention", "interval"), ("retention", "reaper_interval"),
                  ("scheduling", "aging_interval"), ("scheduling", "probe_interval"),
                  ("scheduling", "breaker_open_for")}
_SIZE_KEYS = {("storage", "log_limit"), ("retention", "max_total_log_size")}
_POLICIES = ("fifo", "binpack", "spread")


def _shown(value: object) -> str:
    """Return a configuration value as the file may have written it: 2, not 2.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def load_settings(path: str | None = None, *, environ: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read ``path`` (if any), apply ``CICD_*`` variables, then ``overrides`` ("section.key")."""
    environ = os.environ if environ is None else environ
    data: dict[str, dict[str, Any]] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"configuration file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"configuration file {path} is not valid TOML: {exc}") from None
    fields = {name: getattr(Settings(), name) for name in Settings.__struct_fields__
              if name != "nodes"}
    from_environment: dict[str, str] = {}  # "section.key" -> the variable that set it
    for section, defaults in fields.items():
        for key in type(defaults).__struct_fields__:
            variable = f"CICD_{section}_{key}".upper()
            if isinstance(getattr(defaults, key), dict):
                continue  # tables are set in the file only
            if variable in environ:
                data.setdefault(section, {})[key] = _from_env(
                    environ[variable], getattr(defaults, key), variable)
                from_environment[f"{section}.{key}"] = variable
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if not key:
            data[section] = value  # a whole section or list, such as "nodes"
            continue
        data.setdefault(section, {})[key] = value
    try:
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        where = f" in {path}" if path else ""
        message = _validation_message(exc)
        source = from_environment.get(message.partition(":")[0])
        if source is not None:
            message += f" (from the environment variable {source})"
        raise UsageError(f"invalid configuration{where}: {message}") from None
    try:
        _check_units(settings, path)
    except UsageError as exc:
        raise UsageError(_with_source(str(exc), path, from_environment)) from None
    return settings


def _with_source(message: str, path: str | None, from_environment: Mapping[str, str]) -> str:
    """Add to a message about a ``section.key`` value where it came from: a variable or the file."""
    match = re.match(r"([a-z_]+\.[a-z_]+) = ", message)
    if match is None:
        return message
    variable = from_environment.get(match.group(1))
    if variable is not None:
        return f"{message} (from the environment variable {variable})"
    return f"{path}: {message}" if path else message


def _validation_message(exc: msgspec.ValidationError) -> str:
    """Reword msgspec's error: a TOML key and, for an unknown one, the closest known key."""
    text = str(exc)
    wrong = re.fullmatch(r"Expected `(\w+)`, got `(\w+)`(?: - at `\$\.?(.*)`)?", text)
    if wrong is not None:
        expected, got, where = wrong.groups("")
        return (f"{where or 'the top level'}: expected {_TOML_KINDS.get(expected, expected)}, "
                f"got {_TOML_KINDS.get(got, got)}")
    bounded = re.fullmatch(r"Expected `(\w+)` ([<>]=?) (\S+)(?: - at `\$\.?(.*)`)?", text)
    if bounded is not None:
        kind, comparison, limit, where = bounded.groups("")
        words = {"<=": "at most", ">=": "at least", "<": "below", ">": "above"}[comparison]
        return f"{where or 'the top level'}: expected {_TOML_KINDS.get(kind, kind)} {words} {limit}"
    match = re.fullmatch(r"Object contains unknown field `([^`]+)`(?: - at `\$(.*)`)?", text)
    if match is None:
        return text.replace("`$.", "`").replace("- at `$`", "").strip()
    key, where = match.group(1), (match.group(2) or "").lstrip(".")
    known = _known_keys(where)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else (
        f"; the keys there are {', '.join(known)}" if known else "")
    return f"{where or 'the top level'}: unknown key {key!r}{hint}"


# msgspec's names of value kinds, as TOML users know them.
_TOML_KINDS = {"str": "a string", "int": "an integer", "float": "a number",
               "bool": "true or false", "array": "an array", "object": "a table"}


def _known_keys(where: str) -> list[str]:
    """Return the keys of the table at ``where`` (``server``, ``nodes[0]``, ``scheduling.pools.x``)."""
    kind: Any = Settings
    for part in re.sub(r"\[[^]]*\]", "", where).split(".") if where else []:
        field = next((f for f in msgspec.structs.fields(kind) if f.name == part), None)
        if field is None:
            return []
        kind = field.type
        while not (isinstance(kind, type) and issubclass(kind, msgspec.Struct)):
            args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
            if not args:
                return []
            kind = args[-1]  # list[NodeSettings], dict[str, PoolSettings], X | None
    return sorted(f.name for f in msgspec.structs.fields(kind))


def _from_env(text: str, default: object, variable: str) -> object:
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes", "on")
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{variable}={text!r}: expected a number") from None
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{variable}={text!r}: expected a whole number") from None
    if isinstance(default, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _check_units(settings: Settings, path: str | None) -> None:
    keys = _DURATION_KEYS | ({("scheduling", "node_lost_after")}
                             if settings.scheduling.node_lost_after else set())
    for section, key in keys:
        value = getattr(getattr(settings, section), key)
        try:
            _duration_with_days(value)
        except Exception as exc:  # noqa: BLE001 - reported with the key
            raise UsageError(f"{section}.{key} = {value!r}: {exc} (days are written 30d)"
                             ) from None
    for section, key in _SIZE_KEYS:
        value = getattr(getattr(settings, section), key)
        try:
            parse_memory(value)
        except Exception as exc:  # noqa: BLE001 - reported with the key
            raise UsageError(f"{section}.{key} = {value!r}: expected a size like 100M or "
                             f"1Gi ({exc})") from None
    if settings.runs.executor not in ("docker", "local"):
        raise UsageError(f"runs.executor = {settings.runs.executor!r}: expected docker or local")
    if settings.runs.intake_size < 1 or settings.runs.per_tenant_runs < 1:
        raise UsageError("runs.intake_size and runs.per_tenant_runs must be at least 1")
    _check_scheduling(settings, path)


def _check_scheduling(settings: Settings, path: str | None) -> None:
    import re

    from cicd.pipeline.quantities import parse_cpu

    scheduling = settings.scheduling
    if scheduling.policy not in _POLICIES:
        raise UsageError(f"scheduling.policy = {scheduling.policy!r}: expected fifo, binpack "
                         "or spread")
    for pool, pool_settings in scheduling.pools.items():
        if pool_settings.policy and pool_settings.policy not in _POLICIES:
            raise UsageError(f"scheduling.pools.{pool}.policy = {pool_settings.policy!r}: "
                             "expected fifo, binpack or spread")
    if not 0 < scheduling.breaker_error_rate <= 1:
        raise UsageError(f"scheduling.breaker_error_rate = {scheduling.breaker_error_rate}: "
                         "expected a share above 0 and at most 1, like 0.5")
    if scheduling.per_tenant_jobs < 0:
        raise UsageError(f"scheduling.per_tenant_jobs = {scheduling.per_tenant_jobs}: expected 0 "
                         "(no limit) or more")
    if scheduling.breaker_window < 1 or not 1 <= scheduling.breaker_min_calls:
        raise UsageError("scheduling.breaker_window and breaker_min_calls must be at least 1")
    for key, parse in (("default_cpu", parse_cpu), ("default_memory", parse_memory)):
        value = getattr(scheduling, key)
        if value:
            try:
                parse(value)
            except ValueError as exc:
                raise UsageError(f"scheduling.{key} = {value!r}: {exc}") from None
    seen: set[str] = set()
    label_name = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,62}")
    node_name = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
    for number, node in enumerate(settings.nodes, start=1):
        where = f"{path + ': ' if path else ''}[[nodes]] number {number} ({node.name!r})"
        if not node.name or node.name in seen:
            raise UsageError(f"{where}: each node needs a name of its own")
        if not node_name.fullmatch(node.name):
            raise UsageError(f"{where}: name = {node.name!r}: use up to 63 letters, digits, "
                             "'_', '.' and '-', starting with a letter or digit (the name "
                             "appears in URLs and commands such as `cicd cordon NAME`)")
        seen.add(node.name)
        if not node.host.startswith(("unix://", "tcp://", "ssh://", "npipe://")):
            raise UsageError(f"{where}: host = {node.host!r}: expected unix://PATH, "
                             "tcp://HOST:PORT or ssh://USER@HOST")
        if node.host.startswith("tcp://") and not re.fullmatch(r"tcp://[^/:]+:[0-9]+/?|"
                                                              r"tcp://\[[0-9a-fA-F:]+\]:[0-9]+/?",
                                                              node.host):
            raise UsageError(f"{where}: host = {node.host!r}: expected tcp://HOST:PORT with a "
                             "port, such as tcp://builder-2:2376")
        for label in node.labels:
            if not label_name.fullmatch(label):
                raise UsageError(f"{where}: label {label!r}: use up to 63 letters, digits, '_', "
                                 "'.', '/' and '-', starting with a letter or digit")
        for key, parse in (("cpu", parse_cpu), ("reserve_cpu", parse_cpu),
                           ("memory", parse_memory), ("reserve_memory", parse_memory)):
            value = getattr(node, key)
            if value == "" or (value == 0 and key.startswith("reserve_")):
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # TOML's 2 arrives as 2.0: name it as written
            try:
                parse(value)
            except (ValueError, TypeError) as exc:
                hint = "" if key.startswith("reserve_") else (
                    f"; leave {key} out to use what the engine reports")
                raise UsageError(f"{where}: {key} = {_shown(value)}: {exc}{hint}") from None
        for capacity_key, reserve_key, to_int in (
                ("cpu", "reserve_cpu", settings.cpu_millis),
                ("memory", "reserve_memory", settings.memory_bytes)):
            capacity = to_int(getattr(node, capacity_key))
            reserve = to_int(getattr(node, reserve_key))
            if capacity and reserve >= capacity:
                raise UsageError(f"{where}: {reserve_key} = {_shown(getattr(node, reserve_key))} "
                                 f"is not below {capacity_key} = "
                                 f"{_shown(getattr(node, capacity_key))}, so the node could "
                                 "take no job; lower the reserve")
        if node.max_jobs < 0:
            raise UsageError(f"{where}: max_jobs = {node.max_jobs}: expected 0 or more")
        for path_key in ("tls_ca", "tls_cert", "tls_key"):
            value = getattr(node, path_key)
            if value and not Path(value).is_file():
                raise UsageError(f"{where}: {path_key} = {value!r}: no such file")

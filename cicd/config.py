"""Server configuration: a TOML file, then ``CICD_*`` environment variables, then flags.

Each key is ``section.key`` in the file and ``CICD_SECTION_KEY`` in the
environment (``server.port`` is ``CICD_SERVER_PORT``). docs/configuration.md
lists every key with its unit and default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from cicd.errors import UsageError
from cicd.pipeline.quantities import parse_duration, parse_memory


class ServerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8470
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

    # Values in the units the code uses.
    def seconds(self, value: str) -> float:
        return _duration_with_days(value)

    @property
    def log_limit_bytes(self) -> int:
        return parse_memory(self.storage.log_limit)


def _duration_with_days(text: str) -> float:
    text = text.strip()
    if text.endswith("d") and text[:-1].isdigit():
        return int(text[:-1]) * 86400.0
    return parse_duration(text)


_DURATION_KEYS = {("runs", "grace"), ("runs", "shutdown_grace"), ("retention", "max_age"),
                  ("retention", "interval"), ("retention", "reaper_interval")}
_SIZE_KEYS = {("storage", "log_limit"), ("retention", "max_total_log_size")}


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
    fields = {name: getattr(Settings(), name) for name in Settings.__struct_fields__}
    for section, defaults in fields.items():
        for key in type(defaults).__struct_fields__:
            variable = f"CICD_{section}_{key}".upper()
            if variable in environ:
                data.setdefault(section, {})[key] = _from_env(
                    environ[variable], getattr(defaults, key), variable)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        data.setdefault(section, {})[key] = value
    try:
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        where = f" in {path}" if path else ""
        raise UsageError(f"invalid configuration{where}: {exc}") from None
    _check_units(settings, path)
    return settings


def _from_env(text: str, default: object, variable: str) -> object:
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{variable}={text!r}: expected a whole number") from None
    if isinstance(default, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _check_units(settings: Settings, path: str | None) -> None:
    for section, key in _DURATION_KEYS:
        value = getattr(getattr(settings, section), key)
        try:
            _duration_with_days(value)
        except Exception as exc:  # noqa: BLE001 - reported with the key
            raise UsageError(f"{section}.{key} = {value!r}: expected a duration like 30s, 10m, "
                             f"2h or 30d ({exc})") from None
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

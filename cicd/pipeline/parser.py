"""Parse pipeline files (format version 1) into a validated ``Pipeline``.

Parsing runs in three stages:

1. ruamel.yaml composes the text into nodes. In that graph an alias is the very node
   object of its anchor, so ``_AliasRecordingComposer`` wraps each alias to keep the
   line where it is used.
2. ``_Expander`` copies the graph into a tree of ``_Scalar``, ``_Mapping`` and
   ``_Sequence``. It expands aliases and merge keys (``<<``) and rejects duplicate
   keys. It stops after visiting ``MAX_NODES`` nodes, which defeats alias bombs.
3. ``_PipelineReader`` checks the tree against the format and builds the model.

Scalars keep their written text and are interpreted here under YAML 1.2 rules, also
in a file with a ``%YAML 1.1`` directive. So ``yes`` is a string, and an ``env``
value such as ``012345`` stays exactly as written.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from cicd.errors import PipelineError
from cicd.pipeline import graph
from cicd.pipeline.model import (
    DEFAULT_JOB_TIMEOUT_SECONDS,
    MAX_RETRIES,
    RETRY_WHEN,
    Job,
    Pipeline,
    Resources,
    Retry,
    Step,
)
from cicd.pipeline.quantities import (
    CPU_EXAMPLE,
    DURATION_EXAMPLE,
    MEMORY_EXAMPLE,
    QUOTE_MAX_CHARS,
    check_image_reference,
    parse_cpu,
    parse_duration,
    parse_memory,
    quote,
)

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_JOB_ID_CHARS = 63
# Maximum length of pipeline and step names: a sentence fits, and so does a console line.
MAX_NAME_CHARS = 200

TOP_LEVEL_KEYS = ("version", "name", "env", "priority", "jobs")
JOB_KEYS = ("image", "needs", "env", "timeout", "allow_failure", "resources", "runs_on",
            "retry", "steps")
STEP_KEYS = ("name", "run", "env", "timeout", "allow_failure")
RESOURCE_KEYS = ("cpu", "memory")
# Keys users try under resources that cicd handles elsewhere, with where.
_GPU_HINT = ("GPUs are not requested here: give the nodes that have them a label such as "
             "gpu=true, and the job runs_on: {gpu: 'true'}")
_NOT_RESOURCES = {"gpu": _GPU_HINT, "gpus": _GPU_HINT}
# Docker refuses a container memory limit below 6 MiB ("Minimum memory limit allowed is 6MB").
MIN_MEMORY = 6 * 1024 * 1024
RETRY_KEYS = ("max", "when")
PRIORITY_RANGE = (-1000, 1000)
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,62}")

_JOB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators.
# None of them belongs in a name that cicd prints on one line of a terminal.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
# Browsers and curl drop these path segments from a URL, so a step with such a name
# could not be addressed in the REST API.
_DOT_SEGMENTS = frozenset({".", ".."})
_NULL_WORDS = frozenset({"", "~", "null", "Null", "NULL"})
_STR_TAG = "tag:yaml.org,2002:str"
_BOOLEANS = {
    "true": True,
    "True": True,
    "TRUE": True,
    "false": False,
    "False": False,
    "FALSE": False,
}
# YAML 1.1 booleans, which YAML 1.2 reads as strings.
_YAML_1_1_BOOLEANS = {
    "yes": "true",
    "y": "true",
    "on": "true",
    "no": "false",
    "n": "false",
    "off": "false",
}

_Path = tuple[str | int, ...]
_Parsed = TypeVar("_Parsed")


def parse_pipeline(text: str | bytes, *, file: str = "<pipeline>") -> Pipeline:
    """Parse and validate the text of a pipeline file.

    ``file`` names the file in error messages. Raises PipelineError for any invalid
    input, including a ``needs`` graph with unknown jobs or a cycle.
    """
    source = _decode(text, file)
    root = _compose(source, file)
    tree = None if root is None else _Expander(file).expand(root)
    return _PipelineReader(file).read_pipeline(tree)


def load_pipeline(path: str | os.PathLike[str]) -> Pipeline:
    """Read and parse the pipeline file at ``path``."""
    file = os.fspath(path)
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer. A regular file
        # ignores the flag.
        with open(os.open(file, os.O_RDONLY | os.O_NONBLOCK), "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                raise PipelineError("the pipeline file is not a regular file (a directory, "
                                    "a named pipe or a device); give the path of a file",
                                    file=file)
            data = stream.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        raise PipelineError(
            "pipeline file not found; create it (docs/pipeline.md describes the format) "
            "or give the path of another pipeline file",
            file=file,
        ) from exc
    except OSError as exc:
        raise PipelineError(f"cannot read the pipeline file: {exc.strerror}", file=file) from exc
    return parse_pipeline(data, file=file)


def render_path(segments: Sequence[str | int]) -> str:
    """Render key path segments as ``jobs.build.steps[2].timeout``.

    Integers are 1-based list indexes. A key with characters other than letters,
    digits, ``_`` and ``-`` is rendered in brackets as a JSON string: ``jobs["a.b"]``.
    A key longer than 80 characters is cut, in brackets too: ``env["AAAA..."...]``.
    """
    rendered = ""
    for segment in segments:
        if isinstance(segment, int):
            rendered += f"[{segment}]"
        elif len(segment) > QUOTE_MAX_CHARS:
            rendered += f"[{json.dumps(segment[:QUOTE_MAX_CHARS])}...]"
        elif _PLAIN_PATH_SEGMENT.fullmatch(segment):
            rendered += f".{segment}" if rendered else segment
        else:
            rendered += f"[{json.dumps(segment)}]"
    return rendered


def _decode(text: str | bytes, file: str) -> str:
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > MAX_FILE_BYTES:
        raise PipelineError(
            f"the file has more than {MAX_FILE_BYTES} bytes (1 MiB), the maximum for a pipeline",
            file=file,
        )
    if isinstance(text, str):
        return text

    skipped = len(codecs.BOM_UTF8) if text.startswith(codecs.BOM_UTF8) else 0
    try:
        return text[skipped:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skipped + exc.start
        line_start = text.rfind(b"\n", 0, offset) + 1
        column = len(text[line_start:offset].decode("utf-8", "replace")) + 1
        raise PipelineError(
            f"invalid UTF-8 at byte offset {offset} (byte 0x{text[offset]:02x}); "
            "save the file as UTF-8",
            file=file,
            line=text.count(b"\n", 0, offset) + 1,
            column=column,
        ) from exc


class _Alias:
    """An alias in the composed graph, with the position where it is written."""

    __slots__ = ("anchor", "column", "line", "target")

    def __init__(self, anchor: str, target: Any, line: int, column: int) -> None:
        self.anchor = anchor
        self.target = target
        self.line = line
        self.column = column


class _ComposeLimitError(Exception):
    """Raised by the composer, which does not know the file name for a PipelineError."""

    def __init__(self, message: str, line: int, column: int, path: _Path) -> None:
        super().__init__(message, line, column, path)
        self.message = message
        self.line = line
        self.column = column
        self.path = path


class _AliasRecordingComposer(Composer):
    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        # YAML allows an anchor name to be defined again, and the later one wins.
        self.warn_double_anchors = False
        self.composed_nodes = 0
        # Key path of the node being composed, for the errors about the limits.
        self.path: list[str | int] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        # ruamel.yaml passes the 0-based position in a list, the key node in a
        # mapping, and None while it composes a key.
        key = index.target if isinstance(index, _Alias) else index
        segment = (
            key + 1
            if isinstance(key, int)
            else key.value
            if isinstance(key, ScalarNode)
            else None
        )
        if segment is not None:
            self.path.append(segment)
        try:
            return self._compose_counted_node(parent, index)
        except MaxDepthExceededError as exc:
            mark = exc.problem_mark
            raise _ComposeLimitError(
                _too_deep_message(), mark.line + 1, mark.column + 1, tuple(self.path)
            ) from exc
        finally:
            if segment is not None:
                self.path.pop()

    def _compose_counted_node(self, parent: Any, index: Any) -> Any:
        if not self.parser.check_event(AliasEvent):
            # ruamel.yaml 0.19 composed about 27,000 nodes per second on one AMD EPYC
            # core, so a 1 MiB flow list of 500,000 items took 20 s. Stopping at the
            # node limit cut that to about 4 s.
            self.composed_nodes += 1
            if self.composed_nodes > MAX_NODES:
                mark = self.parser.peek_event().start_mark
                raise _ComposeLimitError(
                    _too_many_nodes_message(), mark.line + 1, mark.column + 1, tuple(self.path)
                )
            return super().compose_node(parent, index)
        event = self.parser.peek_event()
        target = super().compose_node(parent, index)
        return _Alias(event.anchor, target, event.start_mark.line + 1, event.start_mark.column + 1)


def _too_many_nodes_message() -> str:
    return (
        f"the document has more than {MAX_NODES} nodes, the maximum; shorten it, for "
        "example by moving long lists of commands into a script in the repository"
    )


def _too_deep_message() -> str:
    return (
        f"the document is nested deeper than {MAX_DEPTH} levels, the maximum; "
        "remove the extra levels of lists and mappings"
    )


def _compose(source: str, file: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.Composer = _AliasRecordingComposer
    yaml.max_depth = MAX_DEPTH
    try:
        return yaml.compose(source)
    except _ComposeLimitError as exc:
        raise PipelineError(
            exc.message, file=file, line=exc.line, column=exc.column, path=render_path(exc.path)
        ) from exc
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.problem and exc.context and exc.problem.startswith("but "):
            # The composer splits "expected a single document, but found another" in two.
            problem, context = f"{exc.context}, {exc.problem}", ""
        else:
            problem = exc.problem or exc.context
            context = f" ({exc.context})" if exc.problem and exc.context else ""
        raise PipelineError(
            f"invalid YAML: {_bounded(problem)}{context}",
            file=file,
            line=None if mark is None else mark.line + 1,
            column=None if mark is None else mark.column + 1,
        ) from exc
    except ReaderError as exc:
        line_start = source.rfind("\n", 0, exc.position) + 1
        # Text passed as str, such as a pipeline sent to the REST API, can hold a lone
        # surrogate, and an escape of it would be rejected too.
        fix = (
            "is a lone surrogate, which UTF-8 cannot encode; remove it or write the "
            "character itself"
            if 0xD800 <= exc.character <= 0xDFFF
            else "is not allowed; remove it or write it as an escape in a double-quoted string"
        )
        raise PipelineError(
            f"invalid YAML: character U+{exc.character:04X} {fix}",
            file=file,
            line=source.count("\n", 0, exc.position) + 1,
            column=exc.position - line_start + 1,
        ) from exc
    except YAMLError as exc:
        raise PipelineError(f"invalid YAML: {_bounded(str(exc))}", file=file) from exc


def _bounded(text: str) -> str:
    # ruamel.yaml quotes names from the file, such as an undefined alias, into its
    # messages. Those names have no length limit.
    limit = 4 * QUOTE_MAX_CHARS
    return text if len(text) <= limit else text[:limit] + "..."


class _Node(msgspec.Struct, frozen=True, kw_only=True):
    line: int
    column: int


class _Scalar(_Node, frozen=True, kw_only=True):
    text: str
    plain: bool
    is_null: bool


class _Mapping(_Node, frozen=True, kw_only=True):
    entries: tuple[tuple[_Scalar, _Value], ...]


class _Sequence(_Node, frozen=True, kw_only=True):
    items: tuple[_Value, ...]


_Value = _Scalar | _Mapping | _Sequence


def _describe(value: _Value) -> str:
    if isinstance(value, _Mapping):
        return "a mapping" if value.entries else "an empty mapping"
    if isinstance(value, _Sequence):
        return "a list" if value.items else "an empty list"
    if value.is_null:
        return "null"
    return quote(value.text)


class _Expander:
    """Copy a composed node graph into a tree, expanding aliases and merge keys."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.visited = 0
        self.path: list[str | int] = []
        self.open_aliases: list[_Alias] = []
        self.outermost_alias_path: list[str | int] = []
        self.open_collections: set[int] = set()

    def fail(self, line: int, column: int, message: str) -> NoReturn:
        raise PipelineError(
            message, file=self.file, line=line, column=column, path=render_path(self.path)
        )

    def expand(self, node: Any, *, is_key: bool = False) -> _Value:
        if isinstance(node, _Alias):
            if id(node.target) in self.open_collections:
                self.fail(
                    node.line,
                    node.column,
                    f"alias {quote('*' + node.anchor)} is used inside the "
                    "node it refers to; recursive aliases are not supported",
                )
            if not self.open_aliases:
                self.outermost_alias_path = list(self.path)
            self.open_aliases.append(node)
            try:
                return self.expand(node.target, is_key=is_key)
            finally:
                self.open_aliases.pop()

        # Every visit counts, also repeated ones through aliases, because repetition is
        # how an alias bomb grows: nine aliases of nine aliases of ... a list.
        self.visited += 1
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if self.visited > MAX_NODES:
            if not self.open_aliases:
                self.fail(line, column, _too_many_nodes_message())
            where = self.open_aliases[0]
            self.path = self.outermost_alias_path
            self.fail(
                where.line,
                where.column,
                f"expanding alias {quote('*' + where.anchor)} makes the "
                f"document larger than {MAX_NODES} nodes; repeat less through aliases",
            )
        if isinstance(node, ScalarNode):
            text = node.value
            if node.style == ">":
                # ruamel.yaml's round-trip scanner marks the fold points of a folded
                # scalar with BEL. The reader rejects a literal BEL in the input, so
                # every BEL in a folded scalar is such a marker.
                text = text.replace("\a", "")
            if _SURROGATE.search(text):
                text = self._join_surrogate_pairs(text, line, column, is_key)
            plain = node.style is None
            is_null = plain and text in _NULL_WORDS and node.tag != _STR_TAG
            return _Scalar(text=text, plain=plain, is_null=is_null, line=line, column=column)
        if len(self.path) >= MAX_DEPTH:
            self.fail(line, column, _too_deep_message())

        self.open_collections.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                items: list[_Value] = []
                for position, item in enumerate(node.value, start=1):
                    self.path.append(position)
                    items.append(self.expand(item))
                    self.path.pop()
                return _Sequence(items=tuple(items), line=line, column=column)
            return self._expand_mapping(node, line, column)
        finally:
            self.open_collections.discard(id(node))

    def _expand_mapping(self, node: Any, line: int, column: int) -> _Mapping:
        entries: list[tuple[_Scalar, _Value]] = []
        first_keys: dict[tuple[bool, str], _Scalar] = {}
        merged: list[tuple[_Scalar, _Value]] = []
        merge_position = 0
        for key_node, value_node in node.value:
            key = self.expand(key_node, is_key=True)
            if not isinstance(key, _Scalar):
                self.fail(key.line, key.column, f"expected a string key, found {_describe(key)}")
            is_merge = key.plain and key.text == "<<"
            earlier = first_keys.setdefault((is_merge, key.text), key)
            if earlier is not key:
                self.fail(
                    key.line,
                    key.column,
                    f"duplicate key {quote(key.text)} on lines {earlier.line} and {key.line}",
                )
            if is_merge:
                merged = self._expand_merge_sources(value_node)
                merge_position = len(entries)
                continue

            self.path.append(key.text)
            value = self.expand(value_node)
            self.path.pop()
            if isinstance(value, _Scalar) and value.plain and not value.text:
                # An empty value's mark is where the next token starts, often the next
                # line, so errors about it point at its key instead.
                value = msgspec.structs.replace(value, line=key.line, column=key.column)
            entries.append((key, value))

        # Keys written in this mapping win over merged ones, and among the merged
        # mappings an earlier one wins over a later one.
        known = {key.text for key, _ in entries}
        inherited = []
        for key, value in merged:
            if key.text not in known:
                known.add(key.text)
                inherited.append((key, value))
        entries[merge_position:merge_position] = inherited
        return _Mapping(entries=tuple(entries), line=line, column=column)

    def _join_surrogate_pairs(self, text: str, line: int, column: int, is_key: bool) -> str:
        """Join each escaped UTF-16 pair, such as ``\\ud83d\\ude00``, into its character.

        ruamel.yaml decodes each ``\\u`` escape on its own, and JSON writes a character
        beyond U+FFFF as such a pair. A surrogate left over cannot be encoded as UTF-8.
        """
        text = _SURROGATE_PAIR.sub(
            lambda pair: pair.group().encode("utf-16-le", "surrogatepass").decode("utf-16-le"),
            text,
        )
        lone = _SURROGATE.search(text)
        if lone is not None:
            subject = "key" if is_key else "string"
            self.fail(
                line,
                column,
                f"{subject} {quote(text)} contains the lone surrogate \\u{ord(lone.group()):04x}, "
                "which UTF-8 cannot encode; write the character itself, or escape it as "
                "\\U0001F600 or as a high surrogate followed by a low one, such as \\ud83d\\ude00",
            )
        return text

    def _expand_merge_sources(self, value_node: Any) -> list[tuple[_Scalar, _Value]]:
        self.path.append("<<")
        value = self.expand(value_node)
        sources = value.items if isinstance(value, _Sequence) else (value,)
        entries: list[tuple[_Scalar, _Value]] = []
        for source in sources:
            if not isinstance(source, _Mapping):
                self.fail(
                    source.line,
                    source.column,
                    f"expected a mapping or a list of mappings to merge, found {_describe(source)}",
                )
            entries.extend(source.entries)
        self.path.pop()
        return entries


class _PipelineReader:
    """Check an expanded tree against the pipeline format and build the model."""

    def __init__(self, file: str) -> None:
        self.file = file
        # The written entries of each job's needs, kept for the positions of errors.
        self.needs_entries: dict[str, list[_Scalar]] = {}

    def fail(self, node: _Node, path: _Path, message: str) -> NoReturn:
        raise PipelineError(
            message, file=self.file, line=node.line, column=node.column, path=render_path(path)
        )

    def read_pipeline(self, root: _Value | None) -> Pipeline:
        if root is None:
            raise PipelineError(
                "the file is empty; expected a mapping with a 'jobs' key",
                file=self.file,
                line=1,
                column=1,
            )
        fields = self.read_fields(
            root, (), TOP_LEVEL_KEYS, ("jobs",), "a mapping with a 'jobs' key"
        )
        self.check_version(fields.get("version"))
        name = fields.get("name")
        jobs = self.read_jobs(fields["jobs"])
        self.check_needs(jobs)
        return Pipeline(
            name=(
                None
                if name is None
                else self.read_name(name, ("name",), "a non-empty name", "pipeline name")
            ),
            env=self.read_env(fields.get("env"), ("env",)),
            priority=self.read_priority(fields.get("priority"), ("priority",)),
            jobs=jobs,
            source_file=self.file,
        )

    def check_version(self, version: _Value | None) -> None:
        if version is None or (
            isinstance(version, _Scalar) and version.plain and version.text == "1"
        ):
            return
        found = f"expected version 1, found {_describe(version)}"
        if isinstance(version, _Scalar) and version.text == "1":
            self.fail(version, ("version",), f"{found}, which is quoted; write version: 1")
        self.fail(version, ("version",), f"{found}; this cicd reads version 1 only")

    def read_fields(
        self,
        value: _Value,
        path: _Path,
        allowed: Sequence[str],
        required: Sequence[str],
        expected: str,
        elsewhere: Mapping[str, str] | None = None,
    ) -> dict[str, _Value]:
        """Return the entries of a mapping, by key; reject keys not in ``allowed``.

        ``elsewhere`` maps keys that users try here but that belong elsewhere to a hint
        saying where, which replaces the closest-key suggestion.
        """
        if not isinstance(value, _Mapping):
            self.fail(value, path, f"expected {expected}, found {_describe(value)}")
        fields: dict[str, _Value] = {}
        for key, item in value.entries:
            if key.text not in allowed:
                import difflib  # only on this error path, because it adds 1 ms to start-up

                close = difflib.get_close_matches(key.text, allowed, n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"valid keys are {', '.join(allowed)}"
                )
                hint = (elsewhere or {}).get(key.text.lower(), hint)
                self.fail(key, path, f"unknown key {quote(key.text)}; {hint}")
            fields[key.text] = item
        for name in required:
            if name not in fields:
                self.fail(value, path, f"missing required key {name!r}")
        return fields

    def read_jobs(self, value: _Value) -> dict[str, Job]:
        path: _Path = ("jobs",)
        if not isinstance(value, _Mapping) or not value.entries:
            found = _describe(value)
            self.fail(value, path, f"expected a mapping of job ids to jobs, found {found}")
        jobs: dict[str, Job] = {}
        for key, job_value in value.entries:
            if not _JOB_ID.fullmatch(key.text):
                self.fail(
                    key,
                    path,
                    f"invalid job id {quote(key.text)}; use letters, digits, '_', '.' and '-', "
                    "starting with a letter, digit or '_'",
                )
            if len(key.text) > MAX_JOB_ID_CHARS:
                self.fail(
                    key,
                    path,
                    f"job id {quote(key.text)} has {len(key.text)} characters; "
                    f"the maximum is {MAX_JOB_ID_CHARS}",
                )
            jobs[key.text] = self.read_job(key, job_value)
        return jobs

    def read_job(self, key: _Scalar, value: _Value) -> Job:
        path: _Path = ("jobs", key.text)
        expected = "a job mapping with 'image' and 'steps' keys"
        fields = self.read_fields(value, path, JOB_KEYS, ("image", "steps"), expected)
        image = self.read_text(fields["image"], (*path, "image"), "a non-empty image name")
        try:
            check_image_reference(image)
        except ValueError as exc:
            self.fail(fields["image"], (*path, "image"), str(exc))
        needs = self.read_needs(fields.get("needs"), (*path, "needs"))
        self.needs_entries[key.text] = needs
        timeout = self.read_duration(fields.get("timeout"), (*path, "timeout"))
        return Job(
            id=key.text,
            image=image,
            needs=tuple(entry.text for entry in needs),
            env=self.read_env(fields.get("env"), (*path, "env")),
            timeout=DEFAULT_JOB_TIMEOUT_SECONDS if timeout is None else timeout,
            allow_failure=self.read_bool(fields.get("allow_failure"), (*path, "allow_failure")),
            resources=self.read_resources(fields.get("resources"), (*path, "resources")),
            runs_on=self.read_labels(fields.get("runs_on"), (*path, "runs_on")),
            retry=self.read_retry(fields.get("retry"), (*path, "retry")),
            steps=self.read_steps(fields["steps"], (*path, "steps")),
            line=key.line,
        )

    def read_needs(self, value: _Value | None, path: _Path) -> list[_Scalar]:
        if value is None:
            return []
        entries = value.items if isinstance(value, _Sequence) else (value,)
        seen: dict[str, _Scalar] = {}
        for entry in entries:
            if not isinstance(entry, _Scalar) or entry.is_null:
                found = _describe(entry)
                self.fail(entry, path, f"expected a job id or a list of job ids, found {found}")
            earlier = seen.setdefault(entry.text, entry)
            if earlier is not entry:
                self.fail(
                    entry,
                    path,
                    f"job {quote(entry.text)} is listed twice, on lines {earlier.line} and {entry.line}",
                )
        return list(seen.values())

    def check_needs(self, jobs: dict[str, Job]) -> None:
        for job_id, entries in self.needs_entries.items():
            for entry in entries:
                if entry.text in jobs:
                    continue
                import difflib  # only on this error path, because it adds 1 ms to start-up

                close = difflib.get_close_matches(entry.text, list(jobs), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"the jobs are {_names(jobs)}"
                self.fail(
                    entry, ("jobs", job_id, "needs"), f"unknown job {quote(entry.text)}; {hint}"
                )

        cycle = graph.find_cycle({job_id: job.needs for job_id, job in jobs.items()})
        if cycle is not None:
            first, second = cycle[0], cycle[1]
            entry = next(entry for entry in self.needs_entries[first] if entry.text == second)
            self.fail(entry, ("jobs", first, "needs"), f"cycle {' -> '.join(cycle)}")

    def read_steps(self, value: _Value, path: _Path) -> tuple[Step, ...]:
        if not isinstance(value, _Sequence) or not value.items:
            self.fail(value, path, f"expected a non-empty list of steps, found {_describe(value)}")
        steps: list[Step] = []
        first_names: dict[str, _Value] = {}
        for index, item in enumerate(value.items, start=1):
            step, name_node = self.read_step(item, (*path, index), index)
            if step.name is not None and name_node is not None:
                earlier = first_names.setdefault(step.name, name_node)
                if earlier is not name_node:
                    self.fail(
                        name_node,
                        (*path, index, "name"),
                        f"duplicate step name {quote(step.name)} "
                        f"on lines {earlier.line} and {name_node.line}",
                    )
            steps.append(step)
        return tuple(steps)

    def read_step(self, value: _Value, path: _Path, index: int) -> tuple[Step, _Value | None]:
        if isinstance(value, _Scalar) and not value.is_null:
            self.fail(
                value,
                path,
                f"expected a step mapping with a 'run' key, found {_describe(value)}; "
                "write the step as '- run: <command>'",
            )
        expected = "a step mapping with a 'run' key"
        fields = self.read_fields(value, path, STEP_KEYS, ("run",), expected)
        name_node = fields.get("name")
        name = None if name_node is None else self.read_step_name(name_node, (*path, "name"))
        run = self.read_text(fields["run"], (*path, "run"), "a non-empty command")
        self.check_no_nul(fields["run"], (*path, "run"), run)
        step = Step(
            index=index,
            name=name,
            run=run,
            env=self.read_env(fields.get("env"), (*path, "env")),
            timeout=self.read_duration(fields.get("timeout"), (*path, "timeout")),
            allow_failure=self.read_bool(fields.get("allow_failure"), (*path, "allow_failure")),
            line=value.line,
        )
        return step, name_node

    def read_step_name(self, value: _Value, path: _Path) -> str:
        if isinstance(value, _Scalar) and value.text.strip().isdigit():
            self.fail(value, path,
                      f"step name {quote(value.text)} is a number, which reads as a step's "
                      "index wherever steps are named; give a name that is not a number")
        name = self.read_name(value, path, "a non-empty step name", "step name")
        if "/" in name:
            self.fail(value, path, f"step name {quote(name)} contains '/', which the REST API "
                      "cannot tell apart from the '/' between parts of a URL; "
                      "use another character, such as '-'")
        if name in _DOT_SEGMENTS:
            self.fail(value, path, f"step name {quote(name)} cannot be used, because browsers "
                      "and curl remove '.' and '..' from URLs, so the REST API could not "
                      "address the step; give another name")
        return name

    def read_name(self, value: _Value, path: _Path, expected: str, subject: str) -> str:
        """Read a name that cicd prints on one line, so without control characters."""
        name = self.read_text(value, path, expected)
        self.check_printable(value, path, name, subject)
        if len(name) > MAX_NAME_CHARS:
            self.fail(value, path, f"{subject} {quote(name)} is longer than the maximum of "
                      f"{MAX_NAME_CHARS} characters; shorten it")
        return name

    def check_printable(self, value: _Value, path: _Path, text: str, subject: str) -> None:
        control = _CONTROL_CHARACTER.search(text)
        if control is None:
            return
        character = control.group()
        kind = (
            "control character"
            if unicodedata.category(character) == "Cc"
            else unicodedata.name(character).lower()
        )
        self.fail(value, path, f"{subject} {quote(text)} contains the {kind} "
                  f"U+{ord(character):04X}; remove it, because the {subject} is printed on one "
                  "line in terminals")

    def read_resources(self, value: _Value | None, path: _Path) -> Resources:
        if value is None:
            return Resources()
        expected = "a mapping with 'cpu' or 'memory'"
        fields = self.read_fields(value, path, RESOURCE_KEYS, (), expected, _NOT_RESOURCES)
        cpu, memory = fields.get("cpu"), fields.get("memory")
        memory_bytes = (None if memory is None else
                        self.read_quantity(memory, (*path, "memory"), parse_memory, MEMORY_EXAMPLE))
        if memory is not None and memory_bytes is not None and memory_bytes < MIN_MEMORY:
            self.fail(memory, (*path, "memory"),
                      f"{_describe(memory)} is below 6Mi, the least memory Docker lets a "
                      "container have; ask for 6Mi or more")
        return Resources(
            cpu_millis=(
                None
                if cpu is None
                else self.read_quantity(cpu, (*path, "cpu"), parse_cpu, CPU_EXAMPLE)
            ),
            memory_bytes=memory_bytes,
        )

    def read_priority(self, value: _Value | None, path: _Path) -> int:
        if value is None:
            return 0
        low, high = PRIORITY_RANGE
        return self.read_integer(value, path, low, high, f"a whole number from {low} to {high}")

    def read_integer(self, value: _Value, path: _Path, low: int, high: int, expected: str) -> int:
        text = value.text.strip() if isinstance(value, _Scalar) and value.plain else None
        if text is None or not re.fullmatch(r"[+-]?[0-9]+", text) or not low <= int(text) <= high:
            found = f"expected {expected}, found {_describe(value)}"
            if (isinstance(value, _Scalar) and not value.plain
                    and re.fullmatch(r"[+-]?[0-9]+", value.text.strip())):
                found += ", which is quoted; remove the quotes"
            self.fail(value, path, found)
        return int(text)

    def read_labels(self, value: _Value | None, path: _Path) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, _Mapping):
            self.fail(value, path, "expected a mapping of node labels to values, like "
                      f"'pool: fast', found {_describe(value)}")
        labels: dict[str, str] = {}
        for key, item in value.entries:
            if not _LABEL_KEY.fullmatch(key.text):
                self.fail(key, path, f"invalid label name {quote(key.text)}; use up to 63 "
                          "letters, digits, '_', '.', '/' and '-', starting with a letter or digit")
            label = self.read_text(item, (*path, key.text), "a label value")
            self.check_printable(item, (*path, key.text), label, "label value")
            labels[key.text] = label
        return labels

    def read_retry(self, value: _Value | None, path: _Path) -> Retry:
        if value is None:
            return Retry()
        fields = self.read_fields(value, path, RETRY_KEYS, ("max",),
                                  "a mapping with 'max' and 'when'")
        count = self.read_integer(fields["max"], (*path, "max"), 0, MAX_RETRIES,
                                  f"a whole number from 0 to {MAX_RETRIES}")
        when_value = fields.get("when")
        when: list[str] = []
        if when_value is not None:
            entries = when_value.items if isinstance(when_value, _Sequence) else (when_value,)
            for entry in entries:
                text = entry.text if isinstance(entry, _Scalar) else None
                if text not in RETRY_WHEN:
                    self.fail(entry, (*path, "when"), f"expected a retry cause "
                              f"({', '.join(RETRY_WHEN)}), found {_describe(entry)}")
                if text not in when:
                    when.append(text)
        else:
            when = list(RETRY_WHEN)
        return Retry(max=count, when=tuple(when))

    def read_env(self, value: _Value | None, path: _Path) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, _Mapping):
            found = _describe(value)
            self.fail(
                value, path, f"expected a mapping of variable names to strings, found {found}"
            )
        env: dict[str, str] = {}
        for key, item in value.entries:
            if not _ENV_NAME.fullmatch(key.text):
                self.fail(
                    key,
                    path,
                    f"invalid variable name {quote(key.text)}; use letters, digits and '_', "
                    "not starting with a digit",
                )
            if isinstance(item, _Scalar) and item.is_null:
                self.fail(
                    item,
                    (*path, key.text),
                    'expected a string, found null; quote it ("") for an empty value',
                )
            text = self.read_text(item, (*path, key.text), "a string", allow_empty=True)
            self.check_no_nul(item, (*path, key.text), text)
            env[key.text] = text
        return env

    def check_no_nul(self, value: _Value, path: _Path, text: str) -> None:
        """Reject a NUL character: a process receives its command and environment as
        C strings, which end at the first NUL."""
        if "\0" in text:
            self.fail(value, path, f"{quote(text)} contains a NUL character (U+0000), which no "
                      "process can receive in its command or environment; remove it")

    def read_text(
        self, value: _Value, path: _Path, expected: str, *, allow_empty: bool = False
    ) -> str:
        if not isinstance(value, _Scalar) or value.is_null:
            self.fail(value, path, f"expected {expected}, found {_describe(value)}")
        if not allow_empty and not value.text.strip():
            self.fail(value, path, f"expected {expected}, found {_describe(value)}")
        return value.text

    def read_bool(self, value: _Value | None, path: _Path) -> bool:
        if value is None:
            return False
        if isinstance(value, _Scalar) and value.plain and value.text in _BOOLEANS:
            return _BOOLEANS[value.text]
        found = f"expected true or false, found {_describe(value)}"
        if isinstance(value, _Scalar) and value.plain and value.text.lower() in _YAML_1_1_BOOLEANS:
            self.fail(value, path, f"{found}; write {_YAML_1_1_BOOLEANS[value.text.lower()]}")
        if isinstance(value, _Scalar) and value.text in _BOOLEANS:
            self.fail(value, path, f"{found}, which is quoted; remove the quotes")
        self.fail(value, path, found)

    def read_duration(self, value: _Value | None, path: _Path) -> float | None:
        if value is None:
            return None
        return self.read_quantity(value, path, parse_duration, DURATION_EXAMPLE)

    def read_quantity(
        self, value: _Value, path: _Path, parse: Callable[[str], _Parsed], expected: str
    ) -> _Parsed:
        if not isinstance(value, _Scalar) or value.is_null:
            self.fail(value, path, f"expected {expected}, found {_describe(value)}")
        try:
            return parse(value.text)
        except ValueError as exc:
            self.fail(value, path, str(exc))


def _names(jobs: dict[str, Job], limit: int = 20) -> str:
    listed = ", ".join(list(jobs)[:limit])
    return listed + (f" and {len(jobs) - limit} more" if len(jobs) > limit else "")

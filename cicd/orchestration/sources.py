"""A run's source: a directory on the server, or a git repository cloned at one commit."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from urllib.parse import urlsplit

import trio

from cicd.errors import UsageError

_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")
_REF = re.compile(r"^[\w./@{}^~+-]+$")


def check_git_url(url: str) -> None:
    """Raise UsageError unless ``url`` is a git URL git would take as a repository."""
    if url.startswith("-") or not (url.startswith(_SCHEMES) or _SCP_LIKE.match(url)):
        raise UsageError(
            f"source.git {url!r} is not a git URL; use https://, ssh://, git://, file:// "
            "or user@host:path")
    if url.startswith(_SCHEMES):
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError:
            raise UsageError(f"source.git {url!r} is not a valid URL") from None
        # A user name over HTTP is often a token. Over ssh:// it is the account (git@).
        secret = password is not None or (parts.username is not None
                                           and parts.scheme in ("http", "https"))
        if secret:
            redacted = url.replace(parts.netloc, "***@" + parts.netloc.rpartition("@")[2], 1)
            raise UsageError(
                f"source.git {redacted} contains credentials. The run's record keeps its URL and "
                "shows it to everyone who can read runs, so remove them and give the "
                "server's git its access another way: a credential helper or an SSH key")


def read_pipeline_file(root: str, relative: str) -> str:
    """Return the text of pipeline file ``relative`` inside source directory ``root``.

    Symbolic links are followed only while they stay inside the source, so a
    source cannot make the server read any other file of its host.
    """
    real_root = os.path.realpath(root)
    real_file = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath([real_root, real_file]) != real_root:
        raise UsageError(f"pipeline file {relative} leads outside the source (a symbolic "
                         "link?); keep the pipeline file inside the source")
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer.
        with open(os.open(real_file, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise UsageError(f"pipeline file {relative} is not a regular file")
            data = handle.read(_PIPELINE_FILE_LIMIT + 1)
    except OSError as exc:
        raise UsageError(f"pipeline file {relative} cannot be read in the source: "
                         f"{exc.strerror}") from None
    if len(data) > _PIPELINE_FILE_LIMIT:
        raise UsageError(f"pipeline file {relative} is over {_PIPELINE_FILE_LIMIT // 2**20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"pipeline file {relative} is not UTF-8 text: {exc}") from None


# The same as the API's limit on a request body, which may carry the pipeline's text.
_PIPELINE_FILE_LIMIT = 4 * 2**20


def check_git_ref(ref: str) -> None:
    if ref.startswith("-") or not _REF.match(ref) or ".." in ref:
        raise UsageError(f"source.ref {ref!r} is not a branch, tag or commit name")


def check_directory(path: str) -> None:
    if not os.path.isabs(path):
        raise UsageError(f"source.dir {path!r} is a relative path, which would depend on the "
                         "server's working directory; give an absolute path")
    if not os.path.isdir(path):
        raise UsageError(f"source.dir {path!r} is not a directory on the server")


async def _git(*args: str, cwd: str | None = None) -> str:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true")
    try:
        result = await trio.run_process(["git", *args], cwd=cwd, env=env, capture_stdout=True,
                                        capture_stderr=True, check=False,
                                        stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise UsageError("git is not installed on the server; install it to build git sources") from None
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UsageError(f"git {args[0]} failed: {detail[-1] if detail else result.returncode}")
    return result.stdout.decode().strip()


async def clone_at(url: str, ref: str | None, destination: str) -> str:
    """Clone ``url`` into ``destination``, check out ``ref`` (default HEAD); return the commit."""
    check_git_url(url)
    if ref:
        check_git_ref(ref)
    await _git("clone", "--quiet", "--no-checkout", "--", url, destination)
    commit = ""
    for candidate in ([ref, f"origin/{ref}", f"refs/tags/{ref}"] if ref else ["HEAD"]):
        try:
            commit = await _git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}",
                                cwd=destination)
            break
        except UsageError:
            continue
    if not commit:
        raise UsageError(f"ref {ref!r} is not a branch, tag or commit of {url}")
    await _git("checkout", "--quiet", "--detach", commit, cwd=destination)
    return commit

"""Small helpers for Trio nurseries."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio

from cicd.errors import CicdError


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextlib.contextmanager
def single_error() -> Iterator[None]:
    """Re-raise a nursery's exception group as its one error, when it holds just one.

    Trio wraps every error that leaves a nursery in an exception group. Where the
    tasks of a nursery are parts of one operation, callers want the operation's
    error itself (``except ProviderError``). Several errors that are all CicdErrors
    (two calls to an engine that stopped responding, say) raise the first of them.
    A group with other errors, or one holding only cancellations, propagates
    unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        errors = [exc for exc in _leaves(group) if not isinstance(exc, trio.Cancelled)]
        if len(errors) == 1 or (errors and all(isinstance(e, CicdError) for e in errors)):
            raise errors[0] from None
        raise

"""Text that cicd prints to a terminal: control characters escaped.

Names, messages and reasons can come from pipeline files, from API clients or from a
Docker engine. Printed as they are, an escape sequence in them could clear the
screen, set the window title or draw a fake line of output. The CLI writes its text
through :class:`PrintableStream`, which shows such characters as ``\\x1b``. Step
output goes to the binary stream underneath and stays byte-exact.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

# C0 controls except tab and newline, DEL, C1 controls, and lone surrogates (which
# cannot be encoded at all).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """Return ``text`` with control characters other than tab and newline escaped."""
    return _UNPRINTABLE.sub(_escape, text)


class PrintableStream:
    """A text stream that escapes what :func:`printable` escapes, and passes the rest
    (``buffer``, ``flush``, ``isatty``...) to the stream it wraps."""

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(printable(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

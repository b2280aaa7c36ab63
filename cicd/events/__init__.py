"""Event types that every context appends to the log (a pure core)."""

from cicd.events.model import (
    ANY_EVENT,
    Event,
    decode_event,
    encode_event,
    now_ms,
)
from cicd.events.model import *  # noqa: F403 - the event classes

__all__ = ["ANY_EVENT", "Event", "decode_event", "encode_event", "now_ms"]

"""Event types that every context appends to the log (a pure core)."""

from cicd.events.model import *
from cicd.events.model import (
    ANY_EVENT,
    Event,
    decode_event,
    encode_event,
    now_ms,
)

__all__ = ["ANY_EVENT", "Event", "decode_event", "encode_event", "now_ms"]

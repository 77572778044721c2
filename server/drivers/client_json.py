"""JSON from clients (drive and audio sockets): every way it can be bad is a ValueError."""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes) -> Any:
    """json.loads, with deep nesting (a RecursionError in the parser) as a ValueError.

    Bad UTF-8 is already a ValueError (UnicodeDecodeError); handlers that count and skip
    bad messages then need to catch only ValueError.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None

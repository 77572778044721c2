"""The stream layer's one exception type (DESIGN.md: one exception type per layer)."""

from __future__ import annotations


class StreamError(ValueError):
    """Bad stream input or configuration; `field` names what is wrong for HTTP 4xx mapping."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

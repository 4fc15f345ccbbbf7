"""A request the service refuses: its HTTP status and the one line that says why."""

from __future__ import annotations


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

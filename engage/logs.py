"""Structured logs: one line per thing that happened, with its numbers, in logfmt."""

from __future__ import annotations

import logging


def logfmt(event: str, **fields) -> str:
    parts = [f"event={event}"]
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' ="'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields) -> str:
    line = logfmt(event, **fields)
    logger.log(level, line)
    return line

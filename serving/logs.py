"""Logging: tokens never reach a log. ``RedactTokens`` rewrites every ``token=<value>`` query
parameter (also percent-encoded names such as ``%74oken=``) in a record's message and arguments,
and is installed on uvicorn's access and error loggers and on ours."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any
from urllib.parse import unquote_plus

REDACTED = "[REDACTED]"
_QUERY_RE = re.compile(r"\?([^\s\"']*)")
_AUTH_RE = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")


def _redact_query(query: str) -> str:
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        name, eq, _ = part.partition("=")
        if eq and unquote_plus(name).strip().lower() == "token":
            parts[i] = f"{name}={REDACTED}"
            changed = True
    return "&".join(parts) if changed else query


def redact(text: str) -> str:
    """``text`` with token query values and bearer credentials replaced by [REDACTED]."""
    if "=" in text:
        text = _QUERY_RE.sub(lambda m: "?" + _redact_query(m.group(1)), text)
    if "earer" in text or "EARER" in text:
        text = _AUTH_RE.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _redact_value(v: Any) -> Any:
    return redact(v) if isinstance(v, str) else v


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_value(v) for k, v in record.args.items()}
        return True


_FILTER = RedactTokens()
LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "engage", "engage.serving")


def install_redaction() -> None:
    """Add the filter to the loggers and their handlers (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(_FILTER)
        for h in logger.handlers:
            if not any(isinstance(f, RedactTokens) for f in h.filters):
                h.addFilter(_FILTER)


def uvicorn_log_config() -> dict:
    """uvicorn's default logging config with RedactTokens on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": "serving.logs.RedactTokens"}
    for handler in config.get("handlers", {}).values():
        handler.setdefault("filters", []).append("redact_tokens")
    config.setdefault("loggers", {}).setdefault("engage", {"handlers": ["default"], "level": "INFO", "propagate": False})
    return config

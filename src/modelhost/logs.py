"""Logging, configured once per process entry point, with the process role in every line.

Every line goes through ``redact``: Bearer tokens, ``token=…``/``"api_key": "…"`` pairs, URL passwords and
hub tokens never reach a log file, whoever wrote the message (our code, a library, a traceback).
"""

from __future__ import annotations

import logging
import os
import re
import sys

REDACTED = "***"

_SECRET_NAME = r"[A-Za-z0-9_.-]*(?:token|key|secret|password|passwd|pwd|credentials?)(?![A-Za-z])"
_PATTERNS = (
    (re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"), rf"\1{REDACTED}"),
    # "hf_token": "value" / 'api_key': 'value' (JSON, Python reprs)
    (re.compile(rf"""(?i)(["']{_SECRET_NAME}["']\s*:\s*)(["'])(?:(?!\2).)+\2"""), rf"\1\2{REDACTED}\2"),
    # token=value, password: value, --api-key value
    (re.compile(rf"""(?i)(\b{_SECRET_NAME}\s*[=:]\s*)(?!["'\s])[^\s,;&"'}}\]]+"""), rf"\1{REDACTED}"),
    (re.compile(r"(://[^/\s:@]*:)[^@\s/]+@"), rf"\1{REDACTED}@"),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}\b"), REDACTED),
)


def redact(text: str) -> str:
    """``text`` with secrets replaced by ``***``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "INFO", role: str = "serve") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter(f"%(asctime)s %(levelname)s {role}[pid={os.getpid()}] %(name)s: %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)

"""Secrets inside catalog entries: which option names hold one, and how they are hidden in answers.

A hub token in ``options`` (``token``, ``hf_token``, ``use_auth_token``, ``api_key``…) is needed by the worker,
so the database keeps it (in a 0600 file, see ``storage.files``); every answer shows ``***`` instead. A client
that sends an entry back unchanged sends ``***``, which keeps the stored value.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"

SECRET_WORDS = frozenset(
    {"token", "key", "secret", "password", "passwd", "pwd", "credential", "credentials", "apikey", "auth"}
)
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def is_secret_name(name: str) -> bool:
    """True when a word of ``name`` names a secret: ``hf_token``, ``apiKey``, ``db-password``; not ``tokenizer``
    or ``max_tokens``."""
    return any(word.lower() in SECRET_WORDS for word in _WORD_SPLIT.split(name) if word)


def redact_options(value: Any) -> Any:
    """``value`` with the values of secret-named keys (at any depth) replaced by ``***``."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_secret_name(str(k)) and v not in (None, "") else redact_options(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_options(v) for v in value]
    return value


def redact_url(source: str) -> str:
    """A URL's password (``https://user:pass@host/…``) replaced by ``***``; anything else unchanged."""
    if "://" not in source or "@" not in source:
        return source
    try:
        parts = urlsplit(source)
    except ValueError:
        return source
    if parts.password is None:
        return source
    netloc = f"{parts.username or ''}:{REDACTED}@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def keep_redacted(sent: Any, stored: Any) -> Any:
    """Options sent by a client, where a secret sent back as ``***`` keeps the stored value."""
    if isinstance(sent, dict) and isinstance(stored, dict):
        out = {}
        for k, v in sent.items():
            if v == REDACTED and is_secret_name(str(k)) and k in stored:
                out[k] = stored[k]
            else:
                out[k] = keep_redacted(v, stored.get(k))
        return out
    return sent

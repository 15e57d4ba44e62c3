"""Log lines never carry secrets (issue 9 #8), whoever formats them: our messages, reprs, tracebacks."""

from __future__ import annotations

import logging

import pytest

from modelhost.logs import configure_logging, redact

TOKEN = "hf_" + "AbCdEf0123" * 3


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        (f"options: {{'token': '{TOKEN}', 'max_length': 128}}", "'max_length': 128"),
        (f'{{"hf_token": "{TOKEN}", "tokenizer": "package:a/b.json"}}', '"tokenizer": "package:a/b.json"'),
        (f"GET https://hub.example/m?token={TOKEN}&rev=main", "&rev=main"),
        (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer ***"),
        (f"cloning https://user:{TOKEN}@git.example/m", "https://user:***@git.example/m"),
        (f"password: {TOKEN} max_tokens=5", "max_tokens=5"),
        (f"a bare {TOKEN} in a message", "a bare"),
    ],
)
def test_redact(line: str, kept: str) -> None:
    out = redact(line)
    assert TOKEN not in out
    assert kept in out


def test_configured_logging_redacts_messages_and_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "serve")
    log = logging.getLogger("modelhost.test")
    log.info("loading with options %s", {"token": TOKEN, "max_length": 64})
    try:
        raise RuntimeError(f"download failed for https://hub.example/x?token={TOKEN}")
    except RuntimeError:
        log.exception("load failed")
    err = capsys.readouterr().err
    assert "loading with options" in err
    assert "RuntimeError: download failed" in err
    assert TOKEN not in err
    logging.getLogger().handlers.clear()

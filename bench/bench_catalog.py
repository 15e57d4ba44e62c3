"""Catalog writes: time per write at a small and a large catalog (issue 9 #3: each write used to reload the table).

Measures ``Catalog.create`` + ``Catalog.update`` in-process on SQLite, first with only the built-in entries, then
with ~550 entries. Before the store kept its mirror from the rows it wrote, 640 writes took 1.9 s at 13 models
and 6.4 s at 551 (the issue's figures); the ratio large/small printed here should stay near 1.

Run: ``python bench/bench_catalog.py [--writes 640]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelhost.catalog.builtin import BUILTIN_MODELS  # noqa: E402
from modelhost.catalog.schemas import ModelCreate, ModelUpdate  # noqa: E402
from modelhost.catalog.store import Catalog  # noqa: E402
from modelhost.storage.db import build_engine, build_sessionmaker, migrate  # noqa: E402


def writes(catalog: Catalog, prefix: str, count: int) -> float:
    started = time.perf_counter()
    for i in range(count // 2):
        catalog.create(ModelCreate(id=f"{prefix}{i}", task="embeddings", backend="onnx", source="x"))
        catalog.update(f"{prefix}{i}", ModelUpdate(threads=2))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=640)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = build_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrate(engine)
        catalog = Catalog(build_sessionmaker(engine), lambda _: True)
        catalog.register_builtins(BUILTIN_MODELS)
        small_size = len(catalog.list())
        small = writes(catalog, "small-", args.writes)
        for i in range(550 - len(catalog.list())):
            catalog.create(ModelCreate(id=f"filler-{i}", task="embeddings", backend="onnx", source="x"))
        large_size = len(catalog.list())
        large = writes(catalog, "large-", args.writes)
        engine.dispose()
    sys.stdout.write(
        f"{args.writes} writes: {small:.2f} s at {small_size} models, {large:.2f} s at {large_size} models "
        f"(ratio {large / small:.2f})\n"
    )


if __name__ == "__main__":
    main()

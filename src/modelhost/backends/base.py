"""The backend contract: ``load()`` once, ``infer(payload, files)`` per request, optionally ``infer_batch``.

``files`` is a ``dict[str, Path]``: the request's uploads, keyed by form field (``"file"``), as files on local disk
that the coordinator owns and deletes after the request (read them, never keep the paths). ``infer`` returns a JSON
object whose values may include ``bytes`` (sent as raw frames, not base64); ``infer_stream`` yields dicts or bytes.

Backends run in a worker process, on one inference thread. They raise ``InvalidInput`` for requests they cannot
serve (answered 400) and let anything else propagate (answered 500 and logged with a traceback).
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from modelhost.worker.protocol import InvalidInput, WorkerSpec


class Backend:
    #: True when ``infer_batch`` does real batching; the worker then merges concurrent requests.
    supports_batching: ClassVar[bool] = False
    #: True when ``infer_stream`` yields partial results (tokens, audio chunks).
    supports_streaming: ClassVar[bool] = False

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.options: dict[str, Any] = dict(spec.options)

    def load(self) -> None:
        raise NotImplementedError

    def infer(self, payload: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
        raise NotImplementedError

    def infer_batch(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.infer(payload, {}) for payload in payloads]

    def infer_stream(
        self, payload: dict[str, Any], files: dict[str, Path], cancelled: threading.Event
    ) -> Iterator[dict[str, Any] | bytes]:
        """Yield partial results; stop soon after ``cancelled`` is set (the client went away)."""
        raise InvalidInput(f"model {self.spec.model_id} does not stream", param="stream")
        yield {}  # pragma: no cover - makes this a generator

    def info(self) -> dict[str, Any]:
        return {}


def resolve_source(source: str) -> str:
    """Turn a catalog source into something a library can load.

    * ``package:<module>[/<sub/path>]`` — a directory (or file) inside an installed Python package that ships
      weights, located without importing the package;
    * an existing local path;
    * anything else is passed through (a hub id, resolved by the library itself).
    """
    if source.startswith("package:"):
        module, _, sub = source.removeprefix("package:").partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise InvalidInput(
                f"model package {module!r} is not installed in this worker's Python environment",
                code="model_package_missing",
                status=503,
            )
        path = Path(next(iter(spec.submodule_search_locations))) / sub
        if not path.exists():
            raise InvalidInput(f"{sub!r} not found inside package {module!r}", code="model_files_missing", status=503)
        return str(path)
    path = Path(source).expanduser()
    if path.exists():
        return str(path.resolve())
    return source


def load_backend_class(reference: str) -> type[Backend]:
    """Import ``package.module:ClassName``."""
    module_name, _, class_name = reference.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"backend reference {reference!r} is not of the form 'package.module:ClassName'")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"{reference} is not a modelhost Backend subclass")
    return cls

"""The backend contract: ``load()`` once, ``infer(request, files)`` per request, optionally ``infer_batch`` and
``infer_stream``.

A backend declares the request model of its task (``request_type``, from ``modelhost.schemas``); the worker hands
the base class the raw payload (``run``, ``run_batch``, ``run_stream``), which parses it into that model — a 400
naming the field when it does not validate — so ``infer`` receives a typed request and checks only what needs the
loaded model. ``infer`` returns the task's result model (or a plain dict); the base class dumps it for the wire.

Backends run in a worker process, on one inference thread. They raise ``BadInput`` (4xx) for requests they cannot
serve and ``BackendFault`` (5xx) when the server lacks something (a package, a file); anything else propagates
(answered 500 and logged with a traceback).

``files`` maps a form field (``"file"``) to a ``Path``: the request's uploads as files on local disk that the
coordinator spooled and deletes after the request (read them, never keep the paths). A result may hold ``bytes``
(an audio chunk, a voiceprint, an embedding matrix): they travel as raw binary frames, never base64; the result
models of ``modelhost.schemas`` type such fields ``bytes`` and describe the JSON part. ``infer_stream`` yields
results or raw ``bytes`` (audio chunks).
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from modelhost.backends.imports import require_packages
from modelhost.errors import BackendFault, BadInput  # re-exported: what a backend raises
from modelhost.schemas.base import describe_errors
from modelhost.worker.protocol import WorkerSpec

__all__ = [
    "Backend",
    "BackendFault",
    "BadInput",
    "Files",
    "Result",
    "dump",
    "load_backend_class",
    "require_file",
    "resolve_source",
]

RequestT = TypeVar("RequestT")
#: Uploaded files by form field name (``file``): paths of files the coordinator spooled for this request.
Files = Mapping[str, Path]
#: What ``infer`` returns: the task's result model, or a JSON-ready dict (custom backends).
Result = BaseModel | dict[str, Any]


class Backend(Generic[RequestT]):
    #: The task's request model (``modelhost.schemas.<task>``); a plain dict for backends of no known task.
    request_type: ClassVar[Any] = dict[str, Any]
    #: True when ``infer_batch`` does real batching; the worker then merges concurrent requests.
    supports_batching: ClassVar[bool] = False
    #: True when ``infer_stream`` yields partial results (tokens, audio chunks).
    supports_streaming: ClassVar[bool] = False
    #: The optional libraries this backend imports (top-level module names) and the extra that installs them:
    #: checked when the backend is created, so a missing one is "install modelhost[<extra>]", not an ImportError.
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = "defaults"
    #: What the backend's zygote imports before it forks workers (``modelhost.worker.zygote``); None: ``requires``.
    #: Libraries and their heavy submodules only, no model code; modules that start threads when imported are left
    #: to the worker (``FORK_UNSAFE``).
    zygote_preload: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def prepare_zygote(cls) -> None:
        """Called in the zygote after the preload: build library state that every model of this backend needs and
        that is not a model (hibari's pronunciation lexicons). It must start no thread and load no weights."""

    def __init__(self, spec: WorkerSpec) -> None:
        require_packages(*self.requires, extra=self.extra, what=f"model {spec.model_id} ({type(self).__name__})")
        self.spec = spec
        self.options: dict[str, Any] = dict(spec.options)

    # -- to implement ----------------------------------------------------------------------------------------------
    def load(self) -> None:
        raise NotImplementedError

    def infer(self, request: RequestT, files: Files) -> Result:
        raise NotImplementedError

    def infer_batch(self, requests: list[RequestT]) -> Sequence[Result]:
        return [self.infer(request, {}) for request in requests]

    def infer_stream(self, request: RequestT, files: Files, cancelled: threading.Event) -> Iterator[Result | bytes]:
        """Yield partial results; stop soon after ``cancelled`` is set (the client went away)."""
        raise BadInput(f"model {self.spec.model_id} does not stream", param="stream", code="streaming_unsupported")
        yield {}  # pragma: no cover - makes this a generator

    def info(self) -> dict[str, Any]:
        return {}

    # -- called by the worker --------------------------------------------------------------------------------------
    @cached_property
    def _adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.request_type)

    def parse(self, payload: dict[str, Any]) -> RequestT:
        """The payload as the task's request model; ``BadInput`` naming the first bad field."""
        try:
            return self._adapter.validate_python(payload)  # type: ignore[no-any-return]  # request_type is RequestT
        except ValidationError as exc:
            message, param, code = describe_errors(exc.errors())
            raise BadInput(message, param=param, code=code) from None

    def run(self, payload: dict[str, Any], files: Files) -> dict[str, Any]:
        return dump(self.infer(self.parse(payload), files))

    def run_batch(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dump(result) for result in self.infer_batch([self.parse(payload) for payload in payloads])]

    def run_stream(
        self, payload: dict[str, Any], files: Files, cancelled: threading.Event
    ) -> Iterator[dict[str, Any] | bytes]:
        for item in self.infer_stream(self.parse(payload), files, cancelled):
            yield item if isinstance(item, bytes) else dump(item)


def require_file(files: Files, name: str = "file") -> Path:
    """The path of the uploaded file ``name``: ``BadInput`` ``missing_file`` / ``empty_file`` when it is absent or
    empty."""
    path = files.get(name)
    if path is None or not path.is_file():
        raise BadInput(f"no {name!r} upload in the request", param=name, code="missing_file")
    if path.stat().st_size == 0:
        raise BadInput(f"the uploaded {name!r} is empty", param=name, code="empty_file")
    return path


def dump(result: Result) -> dict[str, Any]:
    """A result ready for the worker's frames: ``bytes`` stay bytes (sent as binary frames), the rest is what
    orjson writes (``model_dump`` in python mode keeps bytes, which ``mode="json"`` would turn into text)."""
    return result.model_dump(mode="python") if isinstance(result, BaseModel) else result


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
            raise BackendFault(
                f"model package {module!r} is not installed in this worker's Python environment",
                code="model_package_missing",
            )
        path = Path(next(iter(spec.submodule_search_locations))) / sub
        if not path.exists():
            raise BackendFault(f"{sub!r} not found inside package {module!r}", code="model_files_missing")
        return str(path)
    path = Path(source).expanduser()
    if path.exists():
        return str(path.resolve())
    return source


def load_backend_class(reference: str) -> type[Backend[Any]]:
    """Import ``package.module:ClassName``."""
    module_name, _, class_name = reference.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"backend reference {reference!r} is not of the form 'package.module:ClassName'")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"{reference} is not a modelhost Backend subclass")
    return cls

"""A backend whose module starts a thread when it is imported (as onnxruntime's does): a zygote that imported it
must refuse to fork, and its models must be plain-spawned."""

from __future__ import annotations

import threading

from tests.support.backends import SleepyEmbeddings

_never = threading.Event()
threading.Thread(target=_never.wait, name="import-thread", daemon=True).start()


class ThreadAtImportEmbeddings(SleepyEmbeddings):
    """``SleepyEmbeddings`` from a module that leaves a thread running once imported."""

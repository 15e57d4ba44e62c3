"""Optional libraries: a backend names what it needs and the extra that installs it, and a missing one is answered
"install modelhost[speech]" (a ``BackendFault``, 503) instead of a raw ``ModuleNotFoundError`` at load or request
time (as infinity's optional-imports helper does)."""

from __future__ import annotations

import importlib.util

from modelhost.errors import BackendFault


def missing_packages(*modules: str) -> list[str]:
    """The top-level modules of ``modules`` that this Python environment cannot import."""
    return [m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None]


def require_packages(*modules: str, extra: str, what: str = "this backend") -> None:
    """``BackendFault`` naming the extra to install when one of ``modules`` is not installed."""
    missing = missing_packages(*modules)
    if missing:
        raise BackendFault(
            f"{what} needs the Python package{'s' if len(missing) > 1 else ''} {', '.join(missing)}, not installed in "
            f"this model's Python environment: install modelhost[{extra}] (pip install 'modelhost[{extra}]')",
            code="missing_package",
        )

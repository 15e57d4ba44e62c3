"""Logging, configured once per process entry point, with the process role in every line."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(level: str = "INFO", role: str = "serve") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {role}[pid={os.getpid()}] %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)

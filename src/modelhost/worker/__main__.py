"""``python -m modelhost.worker``: run one model worker (started by the coordinator, not by hand)."""

from __future__ import annotations

import asyncio
import os
import sys

from modelhost.logs import configure_logging
from modelhost.worker.protocol import SPEC_ENV, TOKEN_ENV, WorkerSpec
from modelhost.worker.server import WorkerServer


def main() -> None:
    if SPEC_ENV not in os.environ or TOKEN_ENV not in os.environ:
        sys.stderr.write("modelhost.worker is started by the modelhost coordinator, not by hand\n")
        raise SystemExit(2)
    spec = WorkerSpec.from_env()
    token = os.environ.pop(TOKEN_ENV)
    # The same redacting set-up as the serve process: a hub token in a library's message never reaches the log file.
    configure_logging(spec.log_level, role=f"worker[{spec.model_id}]")
    server = WorkerServer(spec, token)
    try:  # uvloop when the environment has it (it comes with the server's uvicorn[standard])
        import uvloop
    except ImportError:
        asyncio.run(server.serve())
    else:
        uvloop.run(server.serve())


if __name__ == "__main__":
    main()

"""Python environments for models with conflicting dependencies.

``create`` makes a venv under ``<data_dir>/envs/NAME``, makes the worker runtime importable in it (a ``.pth``
file pointing at a directory that links to this installation's ``modelhost`` package) and installs the worker's
own dependencies (aiohttp, pydantic) plus the user's requirements. A model's ``python_env`` picks
``envs/NAME/bin/python``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import modelhost

log = logging.getLogger(__name__)

ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
WORKER_REQUIREMENTS = ("aiohttp>=3.9", "pydantic>=2.7")  # the worker runtime parses requests with the schemas


class EnvError(Exception):
    pass


@dataclass
class EnvInfo:
    name: str
    path: str
    python: str
    python_version: str
    created_at: float
    requirements: str


class EnvManager:
    def __init__(self, envs_dir: Path) -> None:
        self.envs_dir = envs_dir

    def path(self, name: str) -> Path:
        if not ENV_NAME.match(name):
            raise EnvError(f"invalid environment name {name!r}: letters, digits, '_', '.', '-' (max 64)")
        return self.envs_dir / name

    def interpreter(self, name: str) -> Path:
        return self.path(name) / "bin" / "python"

    def exists(self, name: str) -> bool:
        try:
            return self.interpreter(name).exists()
        except EnvError:
            return False

    def create(self, name: str, requirements: Path | None, *, python: str | None = None) -> EnvInfo:
        target = self.path(name)
        if target.exists():
            raise EnvError(f"environment {name!r} already exists at {target}")
        if requirements is not None and not requirements.is_file():
            raise EnvError(f"requirements file not found: {requirements}")
        self.envs_dir.mkdir(parents=True, exist_ok=True)
        try:
            _run([python or sys.executable, "-m", "venv", str(target)])
            py = str(target / "bin" / "python")
            site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
            (Path(site) / "modelhost-runtime.pth").write_text(str(self._runtime_dir()) + "\n")
            args = [py, "-m", "pip", "install", "--disable-pip-version-check", *WORKER_REQUIREMENTS]
            if requirements is not None:
                args += ["-r", str(requirements.resolve())]
            _run(args)
            version = _run([py, "-c", "import platform; print(platform.python_version())"]).strip()
            _run([py, "-c", "import modelhost.worker.server"])  # the worker runtime must import there
        except Exception:
            shutil.rmtree(target, ignore_errors=True)
            raise
        info = EnvInfo(
            name=name,
            path=str(target),
            python=py,
            python_version=version,
            created_at=time.time(),
            requirements=requirements.read_text() if requirements else "",
        )
        (target / "modelhost-env.json").write_text(json.dumps(asdict(info), indent=2))
        return info

    def list(self) -> list[EnvInfo]:
        if not self.envs_dir.is_dir():
            return []
        out = []
        for meta in sorted(self.envs_dir.glob("*/modelhost-env.json")):
            try:
                out.append(EnvInfo(**json.loads(meta.read_text())))
            except (OSError, ValueError, TypeError):
                log.warning("skipping unreadable environment metadata %s", meta)
        return out

    def remove(self, name: str) -> None:
        target = self.path(name)
        if not (target / "modelhost-env.json").exists():
            raise EnvError(f"environment {name!r} does not exist")
        shutil.rmtree(target)

    def _runtime_dir(self) -> Path:
        """A directory holding only a link to this installation's ``modelhost`` package."""
        runtime = self.envs_dir / ".runtime"
        runtime.mkdir(parents=True, exist_ok=True)
        link = runtime / "modelhost"
        package = Path(modelhost.__file__).resolve().parent
        if not link.is_symlink() or link.resolve() != package:
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(package, target_is_directory=True)
        return runtime


def _run(args: list[str]) -> str:
    log.info("running %s", " ".join(args))
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise EnvError(f"command failed ({proc.returncode}): {' '.join(args)}\n{tail}")
    return proc.stdout

"""Reference voices registered once under a name (a short recording each) and reused for speech and videos.

Stored as files under ``<data_dir>/voices/``: ``<name>.audio`` (the upload, untouched) and ``<name>.json``
(metadata). ML-free: the serve process keeps them; workers get the bytes with each request.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from modelhost.errors import storage_full_in

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_SAMPLE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class ReferenceVoice:
    name: str
    filename: str
    content_type: str
    bytes: int
    created_at: int


class VoiceStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def under(cls, data_dir: Path) -> VoiceStore:
        """The store of a server's data directory (``<data_dir>/voices``)."""
        return cls(data_dir / "voices")

    def reference(self, name: str) -> tuple[str, bytes, str] | None:
        """(filename, bytes, content type) of a registered voice, as a worker file part; None when unknown."""
        found = self.get(name)
        if found is None:
            return None
        voice, data = found
        return voice.filename, data, voice.content_type

    def _paths(self, name: str) -> tuple[Path, Path]:
        return self.folder / f"{name}.audio", self.folder / f"{name}.json"

    @staticmethod
    def valid_name(name: str) -> bool:
        return bool(NAME_PATTERN.match(name))

    def add(self, name: str, data: bytes, filename: str, content_type: str) -> ReferenceVoice:
        """Store a voice; ``FileExistsError`` when the name is taken. No room left in the folder → ``StorageFull``
        (507), nothing stored and the name still free."""
        audio, meta = self._paths(name)
        voice = ReferenceVoice(name, filename, content_type, len(data), int(time.time()))
        partial = audio.with_name(f".{audio.name}.part")
        with storage_full_in(self.folder, f"the reference voice {name!r}"):
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(meta, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the name is claimed atomically
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(asdict(voice), handle)
                partial.write_bytes(data)
                os.replace(partial, audio)
            except BaseException:
                partial.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
                raise
        return voice

    def get(self, name: str) -> tuple[ReferenceVoice, bytes] | None:
        if not self.valid_name(name):
            return None
        audio, meta = self._paths(name)
        if not (audio.is_file() and meta.is_file()):
            return None
        voice = ReferenceVoice(**json.loads(meta.read_text(encoding="utf-8")))
        return voice, audio.read_bytes()

    def list(self) -> list[ReferenceVoice]:
        if not self.folder.is_dir():
            return []
        voices = []
        for meta in sorted(self.folder.glob("*.json")):
            if (meta.with_suffix(".audio")).is_file():
                voices.append(ReferenceVoice(**json.loads(meta.read_text(encoding="utf-8"))))
        return voices

    def delete(self, name: str) -> bool:
        if not self.valid_name(name):
            return False
        audio, meta = self._paths(name)
        existed = meta.is_file()
        audio.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        return existed

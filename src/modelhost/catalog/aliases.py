"""Model names OpenAI clients hard-code (``whisper-1``, ``tts-1``…), resolved to a catalog entry.

An alias is a second name for one entry, not a copy: it resolves to the same ``ModelEntry``, so requests to the
alias and to the model share one worker. A catalog model with the alias's id wins over the alias.
"""

from __future__ import annotations

from modelhost.catalog.schemas import ModelEntry
from modelhost.catalog.store import Catalog

#: alias → (task, model id)
ALIASES: dict[str, tuple[str, str]] = {
    "whisper-1": ("speech-recognition", "whisper-base"),
    "gpt-4o-transcribe": ("speech-recognition", "whisper-base"),
    "gpt-4o-mini-transcribe": ("speech-recognition", "whisper-base"),
    "tts-1": ("text-to-speech", "hibari"),
    "tts-1-hd": ("text-to-speech", "hibari"),
    "gpt-4o-mini-tts": ("text-to-speech", "hibari"),  # its ``instructions`` are accepted and ignored
}


def resolve_model_or_raise(catalog: Catalog, task: str, model_id: str) -> ModelEntry:
    """The catalog entry for ``model_id`` (or the alias ``model_id``) serving ``task``; 404 otherwise."""
    alias = ALIASES.get(model_id)
    if alias is not None and alias[0] == task and not _exists(catalog, model_id):
        return catalog.get_for_task_or_raise(task, alias[1])
    return catalog.get_for_task_or_raise(task, model_id)


def aliases_of(catalog: Catalog) -> dict[str, ModelEntry]:
    """Alias → entry, for the aliases whose model is in the catalog (and not shadowed by a model of that id)."""
    out: dict[str, ModelEntry] = {}
    for alias, (task, target) in ALIASES.items():
        if _exists(catalog, alias):
            continue
        entries = {e.id: e for e in catalog.list(task)}
        if target in entries:
            out[alias] = entries[target]
    return out


def _exists(catalog: Catalog, model_id: str) -> bool:
    return any(e.id == model_id for e in catalog.list())

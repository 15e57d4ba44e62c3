"""The reference-voice store: names claimed once, files under <data_dir>/voices, unsafe names refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost.media.voices import VoiceStore


def test_add_get_list_delete(tmp_path: Path) -> None:
    store = VoiceStore.under(tmp_path)
    assert store.list() == []
    voice = store.add("narrator", b"RIFF....", "me.wav", "audio/wav")
    assert (voice.name, voice.bytes) == ("narrator", 8)
    assert store.reference("narrator") == ("me.wav", b"RIFF....", "audio/wav")
    with pytest.raises(FileExistsError):
        store.add("narrator", b"other", "x.wav", "audio/wav")
    assert store.reference("narrator") == ("me.wav", b"RIFF....", "audio/wav")  # the first one stays
    assert [v.name for v in store.list()] == ["narrator"]
    assert store.delete("narrator") is True
    assert store.delete("narrator") is False
    assert store.reference("narrator") is None
    assert sorted(p.name for p in (tmp_path / "voices").iterdir()) == []


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    store = VoiceStore.under(tmp_path)
    assert not VoiceStore.valid_name(name)
    assert store.get(name) is None
    assert store.delete(name) is False

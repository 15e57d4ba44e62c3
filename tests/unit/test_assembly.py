"""Weights split across packages are assembled once, checked, and redone when truncated."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelhost.backends.assembly import assemble_file, model_directory
from modelhost.errors import BackendFault


def parts(tmp_path: Path, *chunks: bytes) -> list[Path]:
    out = []
    for i, chunk in enumerate(chunks, 1):
        path = tmp_path / f"model.bin.part{i}"
        path.write_bytes(chunk)
        out.append(path)
    return out


def test_parts_are_concatenated_once_and_a_truncated_file_is_redone(tmp_path: Path) -> None:
    pieces = parts(tmp_path, b"abc" * 1000, b"def" * 500)
    target = tmp_path / "out" / "model.bin"
    assert assemble_file(target, pieces) == target
    assert target.read_bytes() == b"abc" * 1000 + b"def" * 500
    first = target.stat().st_mtime_ns
    assemble_file(target, pieces)
    assert target.stat().st_mtime_ns == first  # the right size: kept, not rewritten
    target.write_bytes(b"abc")  # an interrupted copy
    assemble_file(target, pieces)
    assert target.read_bytes() == b"abc" * 1000 + b"def" * 500
    assert not list(target.parent.glob("*.partial"))


def test_checksum_and_missing_parts_are_backend_faults(tmp_path: Path) -> None:
    pieces = parts(tmp_path, b"one", b"two")
    good = hashlib.sha256(b"onetwo").hexdigest()
    assert assemble_file(tmp_path / "ok.bin", pieces, sha256=good).read_bytes() == b"onetwo"
    with pytest.raises(BackendFault) as wrong:
        assemble_file(tmp_path / "bad.bin", pieces, sha256="0" * 64)
    assert wrong.value.code == "model_files_corrupt"
    assert not (tmp_path / "bad.bin").exists()
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(BackendFault) as missing:
        assemble_file(tmp_path / "x.bin", [*pieces, tmp_path / "nope.part3"])
    assert missing.value.status == 503
    assert "nope.part3" in missing.value.message


def test_model_directory_copies_the_small_files_and_assembles_the_named_ones(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "__init__.py").write_text("")
    pieces = parts(source, b"x" * 10, b"y" * 5)
    options = {"assemble": {"model.bin": [str(p) for p in pieces]}}
    built = Path(model_directory("team/whisper", str(source), options, str(tmp_path / "data")))
    assert built == tmp_path / "data" / "models" / "team_whisper"
    assert (built / "model.bin").read_bytes() == b"x" * 10 + b"y" * 5
    assert (built / "config.json").read_text() == "{}"
    assert not (built / "__init__.py").exists()
    assert not list(built.glob("*.part*"))
    assert model_directory("plain", str(source), {}, "") == str(source.resolve())
    with pytest.raises(BackendFault):
        model_directory("bad", str(source), {"assemble": {"model.bin": []}}, str(tmp_path))

"""Pure parts of the presentation video: notes → TTS chunks, subtitle cues, silence and WAV handling."""

from __future__ import annotations

import pytest

from modelhost.media.slides import Deck, DeckError, Slide, check_pptx_bytes
from modelhost.media.subtitles import to_srt, to_vtt
from modelhost.media.video import (
    chunk_text,
    pcm16_silence,
    read_wav,
    slide_cues,
    split_sentences,
    wav_bytes,
    wav_duration,
)


def test_sentences_split_at_sentence_ends_only() -> None:
    text = 'Hello there.  Prices rose 3.5 percent!\nWhy?  Because "demand grew." Then it fell…  Done'
    assert split_sentences(text) == [
        "Hello there.",
        "Prices rose 3.5 percent!",
        "Why?",
        'Because "demand grew."',
        "Then it fell…",
        "Done",
    ]
    assert split_sentences("   ") == []


def test_chunks_pack_whole_sentences_up_to_the_limit() -> None:
    sentences = [f"Sentence number {i} is here." for i in range(30)]
    chunks = chunk_text(" ".join(sentences), max_chars=100)
    assert all(len(chunk) <= 100 for chunk in chunks)
    assert " ".join(chunks) == " ".join(sentences)  # nothing lost, nothing reordered
    assert all(chunk.endswith(".") for chunk in chunks)  # every chunk ends at a sentence end
    assert len(chunks) > 1


def test_a_sentence_longer_than_the_limit_is_split_between_words() -> None:
    long_sentence = "word, " * 60 + "end."
    chunks = chunk_text(long_sentence, max_chars=50)
    assert all(len(chunk) <= 50 for chunk in chunks)
    assert " ".join(chunks).split() == long_sentence.split()


def test_silence_and_wav_round_trip() -> None:
    pcm = pcm16_silence(1.0, 24_000)
    assert len(pcm) == 48_000
    assert set(pcm) == {0}
    data = wav_bytes(pcm, 24_000)
    assert wav_duration(data) == pytest.approx(1.0)
    assert read_wav(data) == (pcm, 24_000)
    with pytest.raises(ValueError, match="not a WAV"):
        read_wav(b"RIFF garbage")


def test_cues_follow_the_measured_chunk_durations() -> None:
    cues = slide_cues([("One two three. Four five six seven eight nine.", 4.0), ("Last one.", 1.0)], offset=10.0)
    assert [cue.text for cue in cues] == ["One two three.", "Four five six seven eight nine.", "Last one."]
    assert cues[0].start == 10.0
    assert cues[1].end == pytest.approx(14.0, abs=0.002)  # the first chunk's 4 s shared by its sentences
    assert cues[0].end < cues[1].end
    assert cues[0].end - cues[0].start < 2.0
    assert (cues[2].start, cues[2].end) == (pytest.approx(14.0, abs=0.002), pytest.approx(15.0, abs=0.002))
    srt = to_srt(cue.as_segment() for cue in cues)
    assert "00:00:10,000 --> " in srt
    assert "Last one." in srt
    assert to_vtt(cue.as_segment() for cue in cues).startswith("WEBVTT")


def test_frame_size_follows_the_deck_aspect_ratio_and_stays_even() -> None:
    widescreen = Deck(slides=[Slide(1, "t", "n", False)], width_emu=12_192_000, height_emu=6_858_000)
    four_three = Deck(slides=[Slide(1, "t", "n", False)], width_emu=9_144_000, height_emu=6_858_000)
    assert widescreen.frame_size() == (1280, 720)
    assert four_three.frame_size() == (1280, 960)
    assert widescreen.frame_size(width=641) == (640, 360)
    assert four_three.frame_size(height=480) == (640, 480)
    assert widescreen.frame_size(333, 201) == (332, 200)


def test_upload_sniffing_rejects_non_zip_and_ole_containers() -> None:
    check_pptx_bytes(b"PK\x03\x04rest")
    with pytest.raises(DeckError) as ole:
        check_pptx_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
    assert ole.value.code == "encrypted_or_legacy_presentation"
    with pytest.raises(DeckError) as text:
        check_pptx_bytes(b"hello")
    assert text.value.code == "invalid_presentation"

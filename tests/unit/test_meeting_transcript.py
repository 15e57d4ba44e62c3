"""The pure parts of the meeting pipeline: joint identification, alignment, segments, renderings."""

from __future__ import annotations

from modelhost.jobs.meeting import _quietest, wav_bytes
from modelhost.jobs.transcript import assign_speakers, build_segments, speaker_of, talk_times, to_srt, to_text, to_vtt


def test_joint_assignment_maximises_the_total_and_never_names_two_speakers_alike() -> None:
    # Greedy (best pair first) would give alice to S0 (0.91) and leave S1 with nobody above the threshold;
    # the joint assignment gives S0 bob and S1 alice: 0.88 + 0.90 > 0.91.
    candidates = {"S0": [("alice", 0.91), ("bob", 0.88)], "S1": [("alice", 0.90), ("carol", 0.5)]}
    assert assign_speakers(candidates, 0.75) == {"S0": ("bob", 0.88), "S1": ("alice", 0.90)}
    # Below the threshold a speaker stays unnamed.
    assert assign_speakers({"S0": [("alice", 0.6)]}, 0.75) == {"S0": None}
    # Many speakers: greedy, still one person per speaker.
    many = {f"S{i}": [("alice", 0.9 - i / 100), ("bob", 0.8)] for i in range(9)}
    picked = [p for p in assign_speakers(many, 0.75).values() if p is not None]
    assert sorted(p[0] for p in picked) == ["alice", "bob"]


def test_words_go_to_the_turn_they_overlap_most_and_segments_break_on_speaker_and_sentence() -> None:
    turns = [(0.0, 2.0, "SPEAKER_00"), (2.2, 5.0, "SPEAKER_01")]
    assert speaker_of(1.9, 2.4, turns) == "SPEAKER_01"  # 0.2 s vs 0.1 s
    assert speaker_of(7.0, 7.5, turns) == "SPEAKER_01"  # no overlap: the nearest turn
    words = [
        {"word": " Hello", "start": 0.1, "end": 0.5},
        {"word": " there.", "start": 0.5, "end": 0.9},
        {"word": " How", "start": 1.0, "end": 1.3},
        {"word": " are", "start": 1.3, "end": 1.6},
        {"word": " you?", "start": 2.3, "end": 2.6},
        {"word": " Fine", "start": 2.8, "end": 3.1},
    ]
    segments = build_segments(words, turns, "SPEAKER_00")
    assert [(s["speaker"], s["text"]) for s in segments] == [
        ("SPEAKER_00", "Hello there."),
        ("SPEAKER_00", "How are"),
        ("SPEAKER_01", "you?"),
        ("SPEAKER_01", "Fine"),
    ]
    assert segments[0]["start"] == 0.1
    assert segments[0]["end"] == 0.9
    assert talk_times(turns) == {"SPEAKER_00": 2.0, "SPEAKER_01": 2.8}


def test_renderings_carry_the_speaker_names() -> None:
    segments = [
        {"start": 0.0, "end": 1.5, "speaker": "SPEAKER_00", "name": "Ada <CEO>", "text": "Hello."},
        {"start": 1.5, "end": 2.0, "speaker": "SPEAKER_00", "name": "Ada <CEO>", "text": "Again."},
        {"start": 2.0, "end": 3.25, "speaker": "SPEAKER_01", "name": None, "text": "Hi."},
    ]
    assert to_srt(segments).startswith("1\n00:00:00,000 --> 00:00:01,500\nAda <CEO>: Hello.\n")
    vtt = to_vtt(segments)
    assert vtt.startswith("WEBVTT\n")
    assert "00:00:02.000 --> 00:00:03.250\n<v SPEAKER_01>Hi.\n" in vtt
    assert "<v Ada &lt;CEO&gt;>Hello." in vtt
    assert to_text(segments) == "Ada <CEO>: Hello. Again.\nSPEAKER_01: Hi.\n"


def test_chunks_are_cut_in_the_quietest_frame() -> None:
    from array import array

    loud = array("h", [8000, -8000] * 4000)  # 0.5 s
    quiet = array("h", [0] * 800)
    pcm = (loud + quiet + loud).tobytes()
    assert _quietest(pcm, 100) == 100 + 8000 + 400
    wav = wav_bytes(b"\x00\x00" * 16000)
    assert wav[:4] == b"RIFF"
    assert len(wav) == 44 + 32000


def test_chunk_speakers_merge_down_to_the_given_count_most_similar_first() -> None:
    from modelhost.jobs.transcript import merge_closest

    voices = [([1.0, 0.0, 0.0], 5.0), ([0.0, 1.0, 0.0], 4.0), ([0.95, 0.1, 0.0], 1.0), ([0.0, 0.0, 1.0], 2.0)]
    assert merge_closest(voices, 3) == [0, 1, 0, 3]  # the short split of voice 0 rejoins it
    assert merge_closest(voices, 4) == [0, 1, 2, 3]
    assert len(set(merge_closest(voices, 1))) == 1
    assert merge_closest([([], 1.0), ([1.0], 1.0), ([1.0], 2.0)], 2) == [0, 1, 1]  # embeddings first

"""The shared text-generation loop (stop sequences, held-back text, counters, cancellation) with a fake model."""

# ruff: noqa: ARG002

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from modelhost.backends.text.textgen_base import Detokenizer, Generation, StopMatcher, TextGenerator
from modelhost.errors import BadInput
from modelhost.worker.protocol import WorkerSpec

END = 0


class _Pieces(Detokenizer):
    def __init__(self, vocab: dict[int, str]) -> None:
        self.vocab = vocab

    def add(self, token: int) -> str:
        return self.vocab[token]


class FakeModel(TextGenerator):
    """Token i (1-based) of the script is emitted at step i; END ends the text."""

    def __init__(self, script: list[str], context_length: int = 100) -> None:
        super().__init__(WorkerSpec(model_id="fake", task="text-generation", backend="", source="", socket_path=""))
        self.vocab = {i + 1: piece for i, piece in enumerate(script)}
        self.context_length = context_length

    def load(self) -> None:
        pass

    def encode(self, request: Generation) -> list[int]:
        return [1] * len((request.prompt or "").split())

    def tokens(
        self, prompt_ids: list[int], request: Generation, max_new: int, cancelled: threading.Event
    ) -> Iterator[int]:
        yield from list(self.vocab)
        while True:
            yield END

    def is_end(self, token: int) -> bool:
        return token == END

    def detokenizer(self) -> Detokenizer:
        return _Pieces(self.vocab)


def run(model: FakeModel, **payload: object) -> tuple[list[str], dict[str, object]]:
    chunks = list(model.run_stream({"model": "fake", "prompt": "a b c", **payload}, {}, threading.Event()))
    return [str(c["text"]) for c in chunks[:-1]], chunks[-1]


def test_stream_concatenates_to_infer_and_counts_tokens() -> None:
    model = FakeModel(["Hel", "lo", " wor", "ld"])
    texts, last = run(model)
    assert (
        "".join(texts) + str(last["text"])
        == model.run({"model": "fake", "prompt": "a b c"}, {})["text"]
        == "Hello world"
    )
    assert last["finish_reason"] == "stop"
    assert (last["prompt_tokens"], last["completion_tokens"]) == (3, 4)


def test_stop_sequence_across_tokens_is_cut_and_never_emitted() -> None:
    model = FakeModel(["Hel", "lo", " wo", "rld", " again"])
    texts, last = run(model, stop=["o wor", "zzz"])
    assert "".join(texts) + str(last["text"]) == "Hell"
    assert last["finish_reason"] == "stop"
    assert last["completion_tokens"] == 4
    assert not any("o" in t for t in texts[1:])  # "o" was held back as a possible start of the stop sequence


def test_held_back_text_is_released_when_it_is_not_a_stop() -> None:
    model = FakeModel(["ab", "c"])
    texts, last = run(model, stop=["cd"])
    assert "".join(texts) + str(last["text"]) == "abc"
    assert last["finish_reason"] == "stop"  # the END token


def test_max_tokens_and_context() -> None:
    model = FakeModel(["x"] * 10, context_length=8)
    _, last = run(model, max_tokens=3)
    assert (last["finish_reason"], last["completion_tokens"]) == ("length", 3)
    _, last = run(model)  # capped by the room left in the context: 8 - 3 prompt tokens
    assert (last["finish_reason"], last["completion_tokens"]) == ("length", 5)
    with pytest.raises(BadInput) as info:
        list(model.run_stream({"model": "fake", "prompt": " ".join("p" * 9)}, {}, threading.Event()))
    assert info.value.code == "context_length_exceeded"


def test_cancel_stops_between_tokens_and_is_counted() -> None:
    model = FakeModel(["x"] * 50)
    cancelled = threading.Event()
    stream = model.run_stream({"model": "fake", "prompt": "a", "ignore_eos": True}, {}, cancelled)
    next(stream)
    next(stream)
    cancelled.set()
    rest = list(stream)
    assert rest[-1]["finish_reason"] == "cancelled"
    info = model.generation_info()
    assert info["generations_cancelled"] == 1
    assert info["last_generation"]["completion_tokens"] == 2  # stopped right after the second token


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "fake"},
        {"model": "fake", "messages": []},
        {"model": "fake", "messages": [{"role": "robot", "content": "x"}]},
        {"model": "fake", "prompt": "x", "max_tokens": 0},
        {"model": "fake", "prompt": "x", "stop": [""]},
        {"model": "fake", "prompt": "x", "logit_bias": {"1": 5}},
    ],
)
def test_invalid_payloads_are_refused_by_the_base_class(payload: dict[str, object]) -> None:
    model = FakeModel(["x"])
    with pytest.raises(BadInput) as info:
        model.parse(payload)
    assert info.value.status == 400
    assert info.value.code


def test_stop_matcher_holds_partial_prefix() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("abcE") == ("abc", False)
    assert matcher.feed("N") == ("", False)
    assert matcher.feed("X") == ("ENX", False)
    assert matcher.feed("xxEND yy") == ("xx", True)

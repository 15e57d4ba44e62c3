"""Reranking through a real server: the built-in MiniLM bi-encoder, and a cross-encoder built in the test.

The cross-encoder is a tiny random BERT sequence classifier (one label) with a tokenizer made from a small
vocabulary file, saved to a temporary directory and added to the catalog through the API: its scores mean nothing,
so the test checks shapes, types and that the order agrees with the scores, not quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess

MODEL = "minilm-rerank"

# One relevant document per query; every other document is a distractor for it.
DOCUMENTS = [
    "Preheat the oven to 200 degrees and bake the bread for thirty minutes.",
    "The central bank raised interest rates by half a percentage point to fight inflation.",
    "Our striker scored twice in the second half and the team won the cup final.",
    "Restart the router and check that the network cable is plugged in.",
    "Water the tomato plants every morning and give them plenty of sunlight.",
    "The patient was given antibiotics for the bacterial lung infection.",
    "The flight to Tokyo was delayed by three hours because of a storm.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
]
QUERIES = [
    ("how long should I bake bread", 0),
    ("why did borrowing costs go up", 1),
    ("who won the football match", 2),
    ("my internet connection is not working", 3),
    ("how do I grow vegetables in my garden", 4),
    ("treatment for pneumonia", 5),
    ("why was my plane late", 6),
    ("how do plants make food", 7),
]


def rerank(server: ServerProcess, body: dict[str, Any]) -> Any:
    with server.client() as http:
        return http.post("/v1/rerank", json=body)


def test_bi_encoder_mrr(server: ServerProcess) -> None:
    reciprocal_ranks = []
    for query, relevant in QUERIES:
        response = rerank(server, {"model": MODEL, "query": query, "documents": DOCUMENTS})
        assert response.status_code == 200, response.text
        ranked = [r["index"] for r in response.json()["results"]]
        rank = ranked.index(relevant) + 1
        reciprocal_ranks.append(1 / rank if rank <= 4 else 0.0)
    mrr = sum(reciprocal_ranks) / len(reciprocal_ranks)
    print(f"{MODEL}: MRR@4 {mrr:.3f} over {len(QUERIES)} queries")  # noqa: T201 - the measured figure, with -s
    assert mrr == 1.0  # measured 1.0: each query's relevant document ranks first


def test_answer_shape(server: ServerProcess) -> None:
    response = rerank(
        server,
        {"model": MODEL, "query": "bake bread", "documents": DOCUMENTS, "top_n": 3, "return_documents": True},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL
    results = body["results"]
    assert len(results) == 3
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(s, float) and -1.0 <= s <= 1.0 for s in scores)
    assert results[0]["index"] == 0
    for r in results:
        assert r["document"] == {"text": DOCUMENTS[r["index"]]}
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] > len(DOCUMENTS)
    # Without top_n every document comes back once; without return_documents no text; the default model is used.
    full = rerank(server, {"query": "bake bread", "documents": [{"text": d} for d in DOCUMENTS]}).json()
    assert full["model"] == MODEL
    assert sorted(r["index"] for r in full["results"]) == list(range(len(DOCUMENTS)))
    assert all("document" not in r for r in full["results"])
    assert [r["relevance_score"] for r in full["results"]][:3] == pytest.approx(scores, abs=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": MODEL, "query": "q", "documents": []}, 400, "documents"),
        ({"model": MODEL, "query": "q", "documents": ["d"] * 1001}, 400, "documents"),
        ({"model": MODEL, "query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n"),
        ({"model": MODEL, "query": "q", "documents": ["d"], "top_n": -3}, 400, "top_n"),
        ({"model": MODEL, "query": "  ", "documents": ["d"]}, 400, "query"),
        ({"model": MODEL, "documents": ["d"]}, 400, "query"),
        ({"model": MODEL, "query": "q"}, 400, "documents"),
        ({"model": MODEL, "query": "q", "documents": "d"}, 400, "documents"),
        ({"model": MODEL, "query": "q", "documents": ["d"], "top_n": "all"}, 400, "top_n"),
        ({"model": "no-such-reranker", "query": "q", "documents": ["d"]}, 404, "model"),
        ({"model": "all-minilm-l6-v2", "query": "q", "documents": ["d"]}, 404, "model"),
    ],
)
def test_bad_input_is_a_4xx_envelope(server: ServerProcess, body: dict[str, Any], status: int, param: str) -> None:
    response = rerank(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    assert error["type"]
    assert error["param"] == param


def build_tiny_cross_encoder(directory: Path) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = sorted({w.strip(".,").lower() for text in DOCUMENTS + [q for q, _ in QUERIES] for w in text.split()})
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def test_cross_encoder_from_a_local_directory(server: ServerProcess, tmp_path: Path) -> None:
    build_tiny_cross_encoder(tmp_path)
    model_id = "tiny-cross-encoder"
    entry = {"id": model_id, "task": "rerank", "backend": "cross-encoder", "source": str(tmp_path)}
    with server.client() as http:
        created = http.post("/v1/models", json=entry)
        assert created.status_code == 201, created.text
    try:
        body = {"model": model_id, "query": "how do plants make food", "documents": DOCUMENTS}
        first = rerank(server, body)
        assert first.status_code == 200, first.text
        answer = first.json()
        assert answer["model"] == model_id
        results = answer["results"]
        assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
        scores = [r["relevance_score"] for r in results]
        assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)  # sigmoid of one logit
        assert scores == sorted(scores, reverse=True)
        assert answer["usage"]["total_tokens"] > len(DOCUMENTS)
        # Same request, same scores; top_n keeps the head of the same order.
        again = rerank(server, {**body, "top_n": 2, "return_documents": True}).json()["results"]
        assert [r["index"] for r in again] == [r["index"] for r in results[:2]]
        assert [r["relevance_score"] for r in again] == pytest.approx(scores[:2], abs=1e-6)
        assert again[0]["document"]["text"] == DOCUMENTS[again[0]["index"]]
    finally:
        with server.client() as http:
            http.delete(f"/v1/models/{model_id}")

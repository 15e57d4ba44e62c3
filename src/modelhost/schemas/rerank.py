"""Reranking (``POST /v1/rerank``, in the Cohere / Jina / Infinity shape)."""

from __future__ import annotations

from pydantic import Field, field_validator

from modelhost.schemas.base import TaskModel, invalid

DEFAULT_RERANK_MODEL = "minilm-rerank"
MAX_DOCUMENTS = 1000
MAX_CHARS = 100_000


class RerankDocument(TaskModel):
    text: str


class RerankRequest(TaskModel):
    model: str = Field(DEFAULT_RERANK_MODEL, description="a rerank model id (GET /v1/models?task=rerank)")
    query: str = Field(description="the search query")
    documents: list[str | RerankDocument] = Field(
        description=f"the texts to rank: strings (or {{'text': ...}} objects), at most {MAX_DOCUMENTS}"
    )
    top_n: int | None = Field(None, description="return only the best N (default: all)")
    return_documents: bool = Field(False, description="include each document's text in the results")

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        if not value.strip():
            raise invalid("empty_input", "'query' must not be blank")
        if len(value) > MAX_CHARS:
            raise invalid("input_too_long", f"'query' has more than {MAX_CHARS} characters")
        return value

    @field_validator("documents", mode="before")
    @classmethod
    def _document_shapes(cls, value: object) -> object:
        """One answer for an item of neither shape (pydantic would list what each member of the union found)."""
        if isinstance(value, list):
            for i, document in enumerate(value):
                if not isinstance(document, str) and not (
                    isinstance(document, dict) and isinstance(document.get("text"), str)
                ):
                    raise invalid(
                        "invalid_parameter",
                        f"documents[{i}] must be a string or an object with a string 'text'",
                        param=str(i),
                    )
        return value

    @field_validator("documents")
    @classmethod
    def _documents(cls, value: list[str | RerankDocument]) -> list[str | RerankDocument]:
        if not value:
            raise invalid("empty_input", "'documents' must not be empty")
        if len(value) > MAX_DOCUMENTS:
            raise invalid("too_many_inputs", f"'documents' has {len(value)} items; at most {MAX_DOCUMENTS} per request")
        for i, document in enumerate(value):
            text = document if isinstance(document, str) else document.text
            if len(text) > MAX_CHARS:
                raise invalid("input_too_long", f"documents[{i}] has {len(text)} characters; at most {MAX_CHARS}")
        return value

    @field_validator("top_n")
    @classmethod
    def _top_n(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise invalid("invalid_parameter", "'top_n' must be at least 1")
        return value

    @property
    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResult(TaskModel):
    scores: list[float] = Field(description="one relevance score per document, in input order")
    tokens: int = 0

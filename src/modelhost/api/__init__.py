"""The HTTP API (FastAPI). Never imports a model library."""

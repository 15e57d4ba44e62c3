"""Text backends: embeddings, reranking, text generation."""

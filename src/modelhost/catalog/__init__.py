"""The model catalog, the backend registry and Python environments (all ML-free)."""

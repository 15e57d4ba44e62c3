"""Model backends. Imported only inside worker processes: each module imports its model library lazily."""

"""The backend-neutral search pipeline: registry, parse, indexing and in-memory matching."""

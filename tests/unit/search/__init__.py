"""Tests of the search pipeline (registry, parse, indexing, matching, SQLite)."""

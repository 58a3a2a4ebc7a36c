"""The MongoDB adapter of the storage port (PyMongo's async API); see ``store``."""

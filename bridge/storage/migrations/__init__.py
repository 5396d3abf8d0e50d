"""Alembic migrations of the call store. ``bridge.storage.migrate`` runs them."""

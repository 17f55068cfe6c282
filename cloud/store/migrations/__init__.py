"""The one Alembic migration tree, run on PostgreSQL and SQLite alike."""

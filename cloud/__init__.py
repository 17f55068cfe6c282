"""The hosted control plane: one ASGI app, stateless replicas over PostgreSQL (or SQLite)."""

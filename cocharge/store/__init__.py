"""Storage: SQLAlchemy engine, schema and migrations (SQLite by default, PostgreSQL by URL)."""

from cocharge.store.db import (
    DatabaseURLError,
    make_engine,
    migrate,
    open_store,
    resolve_url,
    utcnow,
)

__all__ = ["DatabaseURLError", "make_engine", "migrate", "open_store", "resolve_url", "utcnow"]

"""Storage: SQLAlchemy engine, schema and migrations (SQLite by default, PostgreSQL by URL)."""

from cocharge.store.db import (
    DatabaseURLError,
    StoreError,
    make_engine,
    migrate,
    open_existing,
    open_store,
    resolve_url,
    utcnow,
)

__all__ = ["DatabaseURLError", "StoreError", "make_engine", "migrate", "open_existing",
           "open_store", "resolve_url", "utcnow"]

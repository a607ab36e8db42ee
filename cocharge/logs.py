"""Logging of the `cocharge` processes: text or JSON lines, to stderr or a file."""

from __future__ import annotations

import json
import logging
import logging.handlers
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC), level, logger, message, and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: int, log_format: str = "text", log_file: str | None = None) -> None:
    """Replace the root logger's handlers: stderr, or `log_file` (a WatchedFileHandler, which
    reopens the file when logrotate moves it)."""
    handler: logging.Handler = (logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
                                if log_file else logging.StreamHandler())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The libraries' own chatter stays at warning unless debugging.
    for noisy in ("websockets", "aiosqlite", "asyncio", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))

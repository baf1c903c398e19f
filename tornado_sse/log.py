"""Log formatting: ``key=value`` text lines by default, JSON lines with ``LOG_FORMAT=json``.

Modules log with lazy ``%s`` arguments and ``key=value`` pairs in the message; only
``__main__`` calls :func:`configure`.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z INFO tornado_sse.gateway stream opened token=...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = "%s %s %s %s" % (
            _timestamp(record.created),
            record.levelname,
            record.name,
            record.getMessage(),
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and the ``key=value``
    pairs of the message as fields of their own (``token``, ``request_id``, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        for word in message.split():
            key, sep, value = word.partition("=")
            if sep and key.isidentifier() and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + ".%03dZ" % (
        int(created * 1000) % 1000
    )


def configure(log_format: str = "text", level: str = "info") -> None:
    """Send every log record to stderr in ``log_format`` (``text`` or ``json``) at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # tornado_sse.access logs each internal API call at INFO and each failed request at WARNING
    # or ERROR; below DEBUG only the failures show, so a busy backend does not log every send.
    logging.getLogger("tornado_sse.access").setLevel(
        logging.DEBUG if level.lower() == "debug" else logging.WARNING
    )

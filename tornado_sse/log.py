"""Log formatting: ``key=value`` text lines by default, JSON lines with ``LOG_FORMAT=json``.

Modules log a short message and put the facts in structured fields::

    log.info("stream opened", extra=fields(token=conn.token, request_id=rid))

The text formatter appends them as ``key=value`` pairs (values with spaces or quotes are quoted),
the JSON formatter makes them fields of their own, keeping their types (numbers stay numbers).
Fields that belong on every line of a process (with ``--processes N``: ``worker`` and ``pid``)
are the formatters' ``context``, appended after the record's own. Only ``__main__`` calls
:func:`configure`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

#: The attribute of a log record that holds its structured fields.
FIELDS = "fields"


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """The ``extra=`` argument that attaches ``values`` to a log record as structured fields."""
    return {FIELDS: values}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    values = getattr(record, FIELDS, None)
    return values if isinstance(values, dict) else {}


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.3f" % value
    text = str(value)
    if not text or any(c in text for c in ' "=\n\r\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z INFO tornado_sse.gateway stream opened token=...``, then the
    ``context`` fields of every line."""

    def __init__(self, context: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.context = dict(context or {})

    def format(self, record: logging.LogRecord) -> str:
        line = "%s %s %s %s" % (
            _timestamp(record.created),
            record.levelname,
            record.name,
            record.getMessage(),
        )
        pairs = {**_fields(record), **self.context}
        if pairs:
            line += " " + " ".join("%s=%s" % (k, _text_value(v)) for k, v in pairs.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the record's
    structured fields (``token``, ``request_id``, ...) and the ``context`` fields, with their
    types."""

    def __init__(self, context: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.context = dict(context or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in {**_fields(record), **self.context}.items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + ".%03dZ" % (
        int(created * 1000) % 1000
    )


def configure(
    log_format: str = "text", level: str = "info", context: Mapping[str, Any] | None = None
) -> None:
    """Send every log record to stderr in ``log_format`` (``text`` or ``json``) at ``level``,
    each line with the fields of ``context`` (e.g. ``{"worker": 1, "pid": 4242}``)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JSONFormatter if log_format == "json" else TextFormatter
    handler.setFormatter(formatter(context))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # tornado_sse.access logs each internal API call at INFO and each failed request at WARNING
    # or ERROR; below DEBUG only the failures show, so a busy backend does not log every send.
    logging.getLogger("tornado_sse.access").setLevel(
        logging.DEBUG if level.lower() == "debug" else logging.WARNING
    )
    # At DEBUG, Tornado's libcurl client dumps every callback on the wire, request targets and
    # header values (cookies, tokens) included, which must never reach a log.
    logging.getLogger("tornado.curl_httpclient").setLevel(logging.INFO)

"""The route table: every fixed path the gateway serves, and what follows from it.

The stream endpoint takes every other path under ``SSE_PATH_PREFIX``; with the prefix ``/`` the
paths of this table, and everything under ``/internal/``, are reserved (:func:`reserved_lookahead`).
``/internal`` itself and ``/internals`` are not: they are ordinary stream paths, as in the Node
original.
Internal routes are served behind ``INTERNAL_SECRET`` (and only on ``INTERNAL_PORT`` when that is
set) and never carry CORS headers (:func:`is_internal`); their requests are counted by route
(:func:`metric_label`). Pure: no Tornado here, ``app`` maps each route's name to its handler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Route:
    """A fixed path: ``name`` picks its handler; ``internal`` says it belongs to the internal
    API (behind ``INTERNAL_SECRET``, every one of them, the dashboard page included)."""

    path: str
    name: str
    internal: bool


#: Every fixed path, public ones first.
ROUTES: tuple[Route, ...] = (
    Route("/healthz", "health", internal=False),
    Route("/readyz", "ready", internal=False),
    Route("/internal/send", "send", internal=True),
    Route("/internal/connections", "connections", internal=True),
    Route("/internal/history", "history", internal=True),
    Route("/internal/stats", "stats", internal=True),
    Route("/internal/dashboard", "dashboard", internal=True),
    Route("/internal/presence", "presence", internal=True),
    Route("/internal/subscribe", "subscribe", internal=True),
    Route("/internal/unsubscribe", "unsubscribe", internal=True),
    Route("/internal/ws", "socket", internal=True),
    Route("/metrics", "metrics", internal=True),
)

#: Every path under it belongs to the internal API, served or not (404 when unknown).
INTERNAL_PREFIX = "/internal/"


def is_internal(path: str) -> bool:
    """Whether ``path`` belongs to the internal API (no CORS, behind the bearer secret)."""
    return path.startswith(INTERNAL_PREFIX) or any(r.internal and r.path == path for r in ROUTES)


def reserved_lookahead() -> str:
    """A regex lookahead, to follow a leading ``/``, that refuses every reserved path."""
    words = [re.escape(INTERNAL_PREFIX[1:])]  # "internal/": the whole internal API
    words += [re.escape(r.path[1:]) + "$" for r in ROUTES if not r.path.startswith(INTERNAL_PREFIX)]
    return "(?!%s)" % "|".join(words)


def metric_label(path: str) -> str | None:
    """The ``route`` label of an internal API request: the route's path, ``other`` for an
    unknown path under ``/internal/``; ``None`` for requests that are not counted."""
    if not path.startswith(INTERNAL_PREFIX):
        return None
    if any(r.path == path for r in ROUTES):
        return path
    return "other"

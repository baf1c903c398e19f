"""The route table: which paths are reserved under ``SSE_PATH_PREFIX=/`` (PROTOCOL 1)."""

from __future__ import annotations

import re

import pytest

from tornado_sse import routes

#: The stream route under the prefix ``/``, anchored as Tornado anchors it.
STREAM = re.compile("/" + routes.reserved_lookahead() + ".*$")


@pytest.mark.parametrize(
    ("path", "stream"),
    [
        ("/internal/send", False),
        ("/internal/connections", False),
        ("/internal/", False),
        ("/internal/anything/else", False),
        ("/healthz", False),
        ("/readyz", False),
        ("/metrics", False),
        ("/internal", True),
        ("/internals", True),
        ("/internalsend", True),
        ("/healthz/x", True),
        ("/metricsx", True),
        ("/", True),
        ("/room/7", True),
    ],
)
def test_root_prefix_reserves_only_the_fixed_routes_and_paths_under_internal(
    path: str, stream: bool
) -> None:
    assert (STREAM.match(path) is not None) is stream


@pytest.mark.parametrize(
    ("path", "internal"),
    [
        ("/internal/send", True),
        ("/internal/nope", True),
        ("/metrics", True),
        ("/internal", False),
        ("/internals", False),
        ("/healthz", False),
    ],
)
def test_is_internal_covers_the_internal_api_and_metrics_only(path: str, internal: bool) -> None:
    assert routes.is_internal(path) is internal

"""The gateway's packing of Redis commands (tornado_sse.cluster.link.packing): the very bytes
redis-py's own packing writes, for every connection class a URL can pick."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import DataError

from tornado_sse.cluster.link import connection_pool

COMMANDS = [
    ("EVALSHA", "abc", 2, "k1", "k2", "x", b"y", "\u00e9t\u00e9", -1, 10**30, ""),
    ("CONFIG GET", "maxmemory"),  # a command name of two words
    (b"CONFIG SET", "a", 1.5),
    ("SET", "big", b"x" * 7000),  # longer than the buffer cutoff
    ("SET", "view", memoryview(b"abc")),
]


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1", "rediss://127.0.0.1:1", "unix:///x"])
@pytest.mark.parametrize("args", COMMANDS)
def test_commands_are_packed_to_the_bytes_redis_py_writes(url: str, args: tuple) -> None:
    pool = connection_pool(url, None, None)
    conn = pool.make_connection()
    ours = b"".join(bytes(part) for part in conn.pack_command(*args))
    theirs = b"".join(bytes(part) for part in AbstractConnection.pack_command(conn, *args))
    assert ours == theirs


def test_a_value_redis_py_refuses_is_refused() -> None:
    conn = connection_pool("redis://127.0.0.1:1", None, None).make_connection()
    with pytest.raises(DataError):
        conn.pack_command("SET", "k", True)

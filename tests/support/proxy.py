"""A TCP proxy on loopback that a test can cut and restore, to cut one gateway off from Redis
while the others still reach it (a network partition of one instance)."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.ports import unused_port


class CuttableProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target>`` until :meth:`cut`, which
    resets every connection through it and refuses new ones until :meth:`restore`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = unused_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        #: See :meth:`lose_reply_to`.
        self._lose: bytes | None = None
        #: The replies lost so far.
        self.lost = 0

    def lose_reply_to(self, marker: bytes) -> None:
        """Forward the next request that holds ``marker``, then reset its connection instead
        of forwarding the reply (the command ran, the client cannot know it did)."""
        self._lose = marker

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening and close every forwarded connection, both ways."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            _reset(writer)
            return
        self._writers.update((writer, up_writer))
        doomed: list[bool] = []  # a request of this connection holds the marker
        await asyncio.gather(
            self._pipe(reader, up_writer, doomed, up=True),
            self._pipe(up_reader, writer, doomed, up=False),
        )

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        doomed: list[bool],
        up: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if up and self._lose is not None and self._lose in data:
                    self._lose = None
                    doomed.append(True)
                elif not up and doomed:
                    self.lost += 1
                    break  # the reply is lost: both ends are reset below
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s connection at once (a reset, as a cut network would look)."""
    with contextlib.suppress(OSError):
        writer.transport.abort()
    writer.close()

"""A small, WHATWG-conformant parser of ``text/event-stream`` bytes, for tests.

It follows the "interpreting an event stream" algorithm of the HTML Living Standard
(section 9.2.6, https://html.spec.whatwg.org/multipage/server-sent-events.html), i.e. it sees a
stream exactly as a browser's ``EventSource`` does:

* the bytes are decoded as UTF-8 with an incremental decoder (invalid sequences become U+FFFD),
  and one U+FEFF BYTE ORDER MARK at the very start of the stream is dropped;
* lines end in CRLF, a lone CR or a lone LF (and nothing else: U+2028, NEL, VT and FF are
  ordinary characters);
* an empty line dispatches the event; a line starting with ``:`` is a comment; otherwise the
  field name is everything before the first ``:`` and the value everything after it, minus one
  leading U+0020 SPACE (a line without ``:`` is a field name with an empty value);
* ``event`` sets the event type, ``data`` appends the value and a LF to the data buffer, ``id``
  sets the last event ID buffer unless the value contains U+0000 NULL, ``retry`` sets the
  reconnection time when the value is made of ASCII digits only; other fields are ignored;
* on dispatch the last event ID string takes the value of the ID buffer (even when nothing is
  dispatched); an empty data buffer dispatches nothing; otherwise the data buffer loses its last
  LF, the event type defaults to ``"message"``, and both buffers are cleared (the ID is not).

An event that the stream ends in the middle of (no blank line yet) is never returned.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["ParsedEvent", "SSEParser", "parse"]

_BOM = "\ufeff"
_LINE_END = re.compile(r"\r\n|\r|\n")
_ASCII_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ParsedEvent:
    """One dispatched event, as an ``EventSource`` listener would see it.

    ``type`` is the event type (``"message"`` unless an ``event:`` field named another),
    ``data`` the joined ``data:`` lines, ``last_event_id`` the stream's last event ID at dispatch.
    """

    type: str
    data: str
    last_event_id: str


class SSEParser:
    """An incremental event-stream parser: :meth:`feed` it bytes, get the events completed.

    Chunks may be split anywhere (inside a line, a CRLF pair or a UTF-8 multibyte sequence); the
    events returned by any sequence of :meth:`feed` calls depend only on the concatenated bytes.

    Public state, readable at any time:

    * ``last_event_id``: the stream's *last event ID string*, the value a browser would send as
      ``Last-Event-ID`` when reconnecting. Like the browser's, it is updated when an event is
      dispatched (at each blank line), not as soon as an ``id:`` line is read.
    * ``retry``: the last valid ``retry:`` value in milliseconds, ``None`` if none was seen.
    * ``comments``: the text of every comment line so far, in order, without the leading ``:``
      and one following space (``b": heartbeat\\n"`` gives ``"heartbeat"``). The spec ignores
      comments; they are kept only so that tests can observe them.
    """

    def __init__(self) -> None:
        self.last_event_id: str = ""
        self.retry: int | None = None
        self.comments: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_stream_start = True  # no character decoded yet: a BOM may still come
        self._skip_lf = False  # the previous line ended in CR: a following LF is part of it
        self._pending = ""  # the start of a line whose end has not arrived yet
        self._data: list[str] = []
        self._event_type = ""
        self._id_buffer = ""

    def feed(self, chunk: bytes) -> list[ParsedEvent]:
        """Parse ``chunk``, the next bytes of the stream; return the events it completes."""
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if self._at_stream_start:
            self._at_stream_start = False
            if text.startswith(_BOM):
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            text = text.removeprefix("\n")

        buffer = self._pending + text
        events: list[ParsedEvent] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            if match.group() == "\r" and match.end() == len(buffer):
                # A CR at the end of what we have: the line is over either way, but an LF that
                # opens the next chunk belongs to this line ending, not to a new (blank) line.
                self._skip_lf = True
            event = self._process_line(buffer[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._pending = buffer[start:]
        return events

    def _process_line(self, line: str) -> ParsedEvent | None:
        """Apply one complete line; return the event it dispatches, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event_type = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif field == "retry" and _ASCII_DIGITS.fullmatch(value):
            self.retry = int(value)
        return None

    def _dispatch(self) -> ParsedEvent | None:
        """The blank-line step: update the last event ID, then build the event if there is data."""
        self.last_event_id = self._id_buffer
        data, event_type = self._data, self._event_type
        self._data, self._event_type = [], ""
        if not data:
            return None
        # Appending each value plus LF, then dropping the final LF, is joining with LF.
        return ParsedEvent(
            type=event_type or "message", data="\n".join(data), last_event_id=self.last_event_id
        )


def parse(data: bytes) -> list[ParsedEvent]:
    """Parse a whole stream at once; an unfinished last event is discarded."""
    return SSEParser().feed(data)

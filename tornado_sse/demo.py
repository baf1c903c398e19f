"""The demo: the gateway, a tiny backend and a page, in one process.

``tornado-sse demo`` (or ``python -m tornado_sse.demo``) starts:

- a backend on a free loopback port that accepts every stream as the user its page names
  (``?name=``), subscribes it to the ``clock`` and ``lobby`` channels, greets each new token with
  an event of its own, and publishes the time every second through ``POST /internal/send``,
  exactly as a real backend would;
- the gateway on ``PORT`` (default 3000) with ``CALLBACK_URL`` pointing at that backend, and
  presence events on ``lobby`` (``PRESENCE_EVENTS``, unless set otherwise);
- a page at ``/`` whose ``EventSource`` shows the events as they arrive and who is online: it
  asks ``/who`` (the demo's window on ``/internal/presence``) again at each ``presence_join`` and
  ``presence_leave``. Tabs of one browser share a name (one user, several streams); a private
  window gets another.

The page has a second mode (``/?mode=jwt``; ``tornado-sse demo --jwt`` points at it): the
stream opens with a JWT that the page fetches from ``/demo/token`` (minted by
:func:`tornado_sse.client.mint_jwt` for the page's name, with a random ``JWT_SECRET`` unless one
is set), so no connect callback is made and the backend only hears the disconnects. Tokens live
20 seconds: then the stream gets ``jwt_expired``, and the page reopens it with a fresh token and
the last event id, so that replay fills the gap. This mode needs the ``jwt`` extra.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import secrets
import sys
import time
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from . import log as logsetup
from . import server
from .app import make_app
from .client import mint_jwt
from .config import ConfigError, Settings, replace
from .log import fields
from .server import parse, serve

log = logging.getLogger("tornado_sse.demo")

#: What ``tornado-sse demo --help`` says first.
DESCRIPTION = (
    "Run the gateway on PORT with a bundled demo backend (on a free loopback port) that accepts "
    "every stream and publishes the time every second; open http://localhost:PORT/ to watch. "
    "With --jwt, the page opens its stream with a JWT instead of a connect callback."
)

#: How long the demo's JWTs live, in seconds: short, so that expiry and renewal show.
TOKEN_TTL = 20

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tornado_sse demo</title>
<style>
 body { font: 15px/1.4 system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; }
 #state { font-weight: bold; } li { font-family: ui-monospace, monospace; }
 nav a { margin-right: 1rem; } nav a.on { font-weight: bold; text-decoration: none; }
</style></head>
<body>
<h1>tornado_sse demo</h1>
<nav><a id="callback" href="?mode=callback">stream with a connect callback</a>
<a id="jwt" href="?mode=jwt">stream with a JWT (no callback)</a></nav>
<p id="about"></p>
<p>EventSource on <code>/sse/demo</code>: <span id="state">connecting</span></p>
<p>You are <b id="me"></b>. Online in the lobby: <span id="who">nobody yet</span></p>
<ol id="events" reversed></ol>
<script>
const params = new URLSearchParams(location.search);
const name = params.get("name") || localStorage.getItem("demo-name")
  || "guest-" + Math.random().toString(36).slice(2, 6);
localStorage.setItem("demo-name", name);
document.getElementById("me").textContent = name;
const mode = params.get("mode") === "jwt" ? "jwt" : "callback";
document.getElementById(mode).className = "on";
document.getElementById("about").textContent = mode === "jwt"
  ? "The page fetched a JWT from /demo/token and opened /sse/demo?jwt=...: the gateway asked "
    + "the backend nothing. The token expires every __TTL__ s; the page then reopens with a "
    + "fresh one and the last event id, and replay fills the gap."
  : "The gateway asked the backend (POST /callback) before opening /sse/demo.";
async function who() {
  const body = await (await fetch("/who")).json();
  const users = body.users.map((u) => u.user + (u.streams > 1 ? " (" + u.streams + " tabs)" : ""));
  document.getElementById("who").textContent = users.join(", ") || "nobody";
}
const list = document.getElementById("events");
const state = document.getElementById("state");
function show(kind, e) {
  const item = document.createElement("li");
  item.textContent = kind + (e.lastEventId ? " #" + e.lastEventId : "") + ": " + e.data;
  list.prepend(item);
  while (list.children.length > 50) list.lastChild.remove();
}
let lastEventId = "";
async function connect() {
  let url = "/sse/demo?name=" + encodeURIComponent(name);
  if (mode === "jwt") {
    const answer = await fetch("/demo/token?name=" + encodeURIComponent(name), {method: "POST"});
    if (!answer.ok) { state.textContent = "no token: " + await answer.text(); return; }
    url = "/sse/demo?jwt=" + encodeURIComponent(await answer.text());
    if (lastEventId) url += "&lastEventId=" + encodeURIComponent(lastEventId);
  }
  const source = new EventSource(url);
  source.onopen = () => { state.textContent = "open"; who(); };
  source.onerror = () => { state.textContent = "reconnecting"; };
  source.addEventListener("welcome", (e) => show("welcome", e));
  source.addEventListener("tick", (e) => { lastEventId = e.lastEventId; show("tick", e); });
  for (const type of ["presence_join", "presence_leave"]) {
    source.addEventListener(type, (e) => { lastEventId = e.lastEventId; show(type, e); who(); });
  }
  source.addEventListener("jwt_expired", () => {
    show("jwt_expired", {lastEventId: "", data: "reopening from #" + lastEventId});
    source.close();
    connect();
  });
}
connect();
</script>
</body></html>
"""


class PageHandler(RequestHandler):
    """Serves the demo page on the gateway's port."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(PAGE.replace("__TTL__", str(TOKEN_TTL)))


class TokenHandler(RequestHandler):
    """``POST /demo/token?name=``: a JWT for the page's stream, as a real backend would mint it
    for a signed-in user: that user, the channels a connect answer would name, their info."""

    def initialize(self, secret: str | None) -> None:
        self.secret = secret

    def post(self) -> None:
        if self.secret is None:
            self.set_status(503)
            self.finish("JWT mode needs pip install 'tornado-sse[jwt]'")
            return
        user = user_of(self.request.uri or "/")
        token = mint_jwt(user, ["clock", LOBBY], TOKEN_TTL, {"name": user}, secret=self.secret)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(token)


class WhoHandler(RequestHandler):
    """``GET /who`` on the gateway's port: the lobby's presence, for the page."""

    def initialize(self, gateway: InternalAPI) -> None:
        self.gateway = gateway

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(await self.gateway.presence(LOBBY))


#: The channel whose presence the page shows.
LOBBY = "lobby"


def user_of(url: str) -> str:
    """The user a demo stream belongs to: its ``name`` query parameter (``guest`` without)."""
    names = parse_qs(urlsplit(url).query).get("name") or ["guest"]
    name = "".join(c for c in names[0] if "!" <= c <= "~")[:40]
    return name or "guest"


class CallbackHandler(RequestHandler):
    """The demo backend's callback endpoint: accept everyone as the user their page names,
    greet them, log disconnects."""

    def initialize(self, gateway: InternalAPI) -> None:
        self.gateway = gateway

    async def post(self) -> None:
        body = json.loads(self.request.body)
        if body["action"] == "connect":
            log.info("backend: connect", extra=fields(token=body["token"]))
            # Sent while the connect callback is still in flight: the gateway buffers it.
            asyncio.get_running_loop().create_task(self._greet(body["token"]))
            user = user_of(body["request"]["url"])
            self.finish({"channels": ["clock", LOBBY], "user": user, "info": {"name": user}})
        else:
            log.info(
                "backend: disconnect", extra=fields(token=body["token"], reason=body["reason"])
            )
            self.finish({})

    async def _greet(self, token: str) -> None:
        data = "hello, your token is %s" % token
        await self.gateway.send({"token": token, "event": {"name": "welcome", "data": data}})


class InternalAPI:
    """Where the demo backend sends: the gateway's internal API, with its secret if set."""

    def __init__(self, url: str, secret: str | None) -> None:
        self.base = url
        self.url = url + "/internal/send"
        self.headers = {"Content-Type": "application/json"}
        if secret:
            self.headers["Authorization"] = "Bearer " + secret

    async def send(self, item: dict[str, object]) -> None:
        response = await AsyncHTTPClient().fetch(
            self.url, method="POST", body=json.dumps(item), headers=self.headers, raise_error=False
        )
        if response.code != 200:
            log.warning("backend: send answered", extra=fields(status=response.code))

    async def presence(self, channel: str) -> bytes:
        """The JSON of ``/internal/presence`` for ``channel``."""
        response = await AsyncHTTPClient().fetch(
            self.base + "/internal/presence?channel=" + channel,
            headers=self.headers,
            raise_error=False,
        )
        return response.body or b'{"users": []}'

    async def clock(self) -> None:
        """Publish the time on the ``clock`` channel every second."""
        while True:
            await asyncio.sleep(1)
            now = time.strftime("%H:%M:%S")
            await self.send({"channel": "clock", "event": {"name": "tick", "data": now}})


def with_jwt_secret(settings: Settings) -> Settings:
    """``settings`` with a random ``JWT_SECRET`` when none is set and the ``jwt`` extra is
    installed (without it the page's JWT mode says what to install)."""
    if settings.jwt_configured or importlib.util.find_spec("jwt") is None:
        return settings
    return replace(settings, jwt_secret=secrets.token_urlsafe(32))


async def run(argv: Sequence[str], jwt_mode: bool = False) -> int:
    settings = with_jwt_secret(parse(argv, prog="tornado-sse demo"))
    backend_socket = bind_sockets(0, "127.0.0.1")
    backend_port = backend_socket[0].getsockname()[1]
    internal = InternalAPI(
        "http://127.0.0.1:%d" % (settings.internal_port or settings.port), settings.internal_secret
    )
    settings = replace(settings, callback_url="http://127.0.0.1:%d/callback" % backend_port)
    if not settings.presence_events:
        settings = replace(settings, presence_events=LOBBY, presence_leave_delay_seconds=1.0)
    sockets = server.Sockets.bind(settings)  # first: a port in use stops the demo at once

    backend = HTTPServer(Application([(r"/callback", CallbackHandler, {"gateway": internal})]))
    backend.add_sockets(backend_socket)
    app = make_app(settings)
    app.add_handlers(
        r".*",
        [
            (r"/", PageHandler),
            (r"/who", WhoHandler, {"gateway": internal}),
            (r"/demo/token", TokenHandler, {"secret": settings.jwt_secret}),
        ],
    )
    log.info(
        "demo: open http://localhost:%d/%s in a browser (Ctrl-C stops)",
        settings.port,
        "?mode=jwt" if jwt_mode else "",
    )
    clock = asyncio.get_running_loop().create_task(internal.clock())
    status = await serve(settings, app, sockets)
    clock.cancel()
    backend.stop()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status. ``--jwt`` points at the page's JWT mode; every
    other argument is a gateway setting."""
    argv = list(sys.argv[1:] if argv is None else argv)
    jwt_mode = "--jwt" in argv
    argv = [arg for arg in argv if arg != "--jwt"]
    try:
        settings = parse(argv, prog="tornado-sse demo", description=DESCRIPTION)
        logsetup.configure(settings.log_format, settings.log_level)
        return server.run(run(argv, jwt_mode), settings)
    except ConfigError as exc:  # a bad setting, or a port in use (server.ListenError)
        print("tornado-sse demo: error: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

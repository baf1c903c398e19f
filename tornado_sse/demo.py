"""The demo: the gateway, a tiny backend and a page, in one process.

``tornado-sse demo`` (or ``python -m tornado_sse.demo``) starts:

- a backend on a free loopback port that accepts every stream as the user its page names
  (``?name=``), subscribes it to the ``clock`` and ``lobby`` channels, greets each new token with
  a ``welcome`` event that tells the page its token, and publishes the time every second
  through ``POST /internal/send``, exactly as a real backend would;
- the gateway on ``PORT`` (default 3000) with ``CALLBACK_URL`` pointing at that backend, and
  presence events on ``lobby`` (``PRESENCE_EVENTS``, unless set otherwise);
- the gateway's internal API on a port of its own bound to 127.0.0.1 only (``INTERNAL_PORT``,
  default ``PORT`` + 1, or a free port when that one is taken): only this machine can push,
  so no secret is needed and the gateway has nothing to warn about; the backend (and the curl
  line the page shows) sends there, with ``INTERNAL_SECRET`` if one is set;
- a page at ``/`` that says what happens as it happens: the connect callback and the token it
  brought, the ticks, a form that pushes an event to this tab's own stream (the page's form
  goes to the backend's ``/demo/push``, which calls ``/internal/send`` with the token), the
  same push as a curl line to copy, a form that says something on the ``lobby`` channel
  (``/demo/say``: every tab sees it), and who is online, from ``/who`` (the backend's window on
  ``/internal/presence``), asked again at each ``presence_join`` and ``presence_leave`` and
  every 3 seconds (a user's second tab changes their stream count but announces nothing). Tabs
  of one browser share a name (one user, several streams); a private window gets another.

The routes of the page (``/``, ``/who``, ``/demo/*``) stand for the backend's own web site and
are served on the gateway's port beside the streams, so that the demo needs one address.

The page has a second mode (``/?mode=jwt``; ``tornado-sse demo --jwt`` points at it): the
stream opens with a JWT that the page fetches from ``/demo/token`` (minted by
:func:`tornado_sse.client.mint_jwt` for the page's name, with a random ``JWT_SECRET`` unless one
is set), so no connect callback is made and the backend only hears the disconnects. Tokens live
20 seconds: then the stream gets ``jwt_expired``, and the page reopens it with a fresh token and
the last event id, so that replay fills the gap. Its pushes go to the user (``{"user": ...}``),
since the backend never heard the stream's token. This mode needs the ``jwt`` extra.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import secrets
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any
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
    "The internal API listens on 127.0.0.1 only (INTERNAL_PORT, default PORT + 1). "
    "With --jwt, the page opens its stream with a JWT instead of a connect callback."
)

#: How long the demo's JWTs live, in seconds: short, so that expiry and renewal show.
TOKEN_TTL = 20

#: The address the demo's internal API listens on: this machine only.
LOOPBACK = "127.0.0.1"

#: The channel whose presence the page shows, and where its tabs talk to each other.
LOBBY = "lobby"

#: Longest text a form of the page may send, in characters.
MAX_TEXT = 500

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tornado_sse demo</title>
<style>
 :root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f7f8fa; --card: #fff;
         --accent: #2e90fa; }
 * { box-sizing: border-box; }
 body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
        color: var(--fg); background: var(--bg); }
 header { padding: 1rem 1.5rem .6rem; background: var(--card);
          border-bottom: 1px solid var(--line); }
 header h1 { font-size: 1.25rem; margin: 0 0 .2rem; }
 nav a { margin-right: 1rem; color: var(--muted); } nav a.on { color: var(--fg);
         font-weight: 600; text-decoration: none; }
 main { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1rem;
        padding: 1rem 1.5rem; }
 section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
           padding: .8rem 1.1rem; }
 h2 { font-size: .8rem; letter-spacing: .04em; text-transform: uppercase; color: var(--muted);
      margin: 0 0 .4rem; font-weight: 600; }
 code, pre, .log li { font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
                      font-size: .85em; }
 code { background: #f2f4f7; padding: 0 .25em; border-radius: 3px; }
 #story li { margin-bottom: .45rem; }
 #story li.done::marker { color: #067647; }
 #state.open { color: #067647; } #state.bad { color: #b42318; }
 form { display: flex; gap: .5rem; margin: .5rem 0; }
 input { flex: 1; font: inherit; padding: .35rem .5rem; border: 1px solid #d0d5dd;
         border-radius: 6px; }
 button { font: inherit; padding: .35rem .8rem; border: 0; border-radius: 6px;
          background: var(--accent); color: #fff; cursor: pointer; }
 pre { background: #101828; color: #e4e7ec; padding: .6rem .7rem; border-radius: 6px;
       white-space: pre-wrap; word-break: break-all; margin: .3rem 0; }
 .muted { color: var(--muted); font-size: .9em; }
 .log { list-style: none; padding: 0; margin: 0; max-height: 16rem; overflow: hidden; }
 .log li { padding: .1rem 0; border-bottom: 1px solid #f2f4f7; white-space: nowrap;
           overflow: hidden; text-overflow: ellipsis; }
 .log b { display: inline-block; min-width: 12.5rem; margin-right: .5rem; color: var(--accent);
          font-weight: 600; }
 #chat li b { min-width: 0; margin-right: .4rem; }
 #who { font-weight: 600; }
 footer { color: var(--muted); padding: 0 1.5rem 1.5rem; font-size: .85rem; }
</style></head>
<body>
<header>
<h1>tornado_sse demo</h1>
<nav><a id="callback" href="?mode=callback">stream with a connect callback</a>
<a id="jwt" href="?mode=jwt">stream with a JWT (no callback)</a></nav>
</header>
<main>
<section>
<h2>What is happening</h2>
<ol id="story">
<li id="step-open">Your browser opened <code id="stream-url">new EventSource(...)</code> on the
gateway: <b id="state">connecting</b>.</li>
<li id="step-auth"></li>
<li id="step-ticks">The backend pushes the time to every stream on the channel
<code>clock</code> once a second (<code>POST /internal/send {"channel": "clock", ...}</code>):
<span id="tick">waiting for the first tick</span>.</li>
</ol>
<p class="muted">You are <b id="me"></b>. Online in the lobby:
<span id="who">nobody yet</span></p>
</section>
<section>
<h2>Push an event to this tab</h2>
<p class="muted" id="push-about"></p>
<form id="push"><input id="push-text" maxlength="500" value="hello from the form">
<button type="submit">Push</button></form>
<p class="muted">The same from a terminal on this machine:
<button type="button" id="copy">Copy</button> <span id="copied"></span></p>
<pre id="curl">waiting for the token</pre>
</section>
<section>
<h2>Say something to the lobby</h2>
<p class="muted">The backend publishes it on the channel <code>lobby</code>
(<code>POST /demo/say</code>, then <code>{"channel": "lobby", ...}</code>): every stream on the
channel gets it. Open this page in a second tab, or in a private window to be another user, and
watch it arrive there.</p>
<form id="say"><input id="say-text" maxlength="500" placeholder="a message for every tab">
<button type="submit">Send to the lobby</button></form>
<ul class="log" id="chat"></ul>
</section>
<section>
<h2>Events on this stream</h2>
<ul class="log" id="events"></ul>
</section>
</main>
<footer id="about-internal"></footer>
<script>
"use strict";
const INTERNAL = __INTERNAL__;  // where the backend (and curl) reach the internal API
const SECRET_SET = __SECRET__;  // whether INTERNAL_SECRET was set
const TTL = __TTL__;
const params = new URLSearchParams(location.search);
const name = params.get("name") || localStorage.getItem("demo-name")
  || "guest-" + Math.random().toString(36).slice(2, 6);
localStorage.setItem("demo-name", name);
const mode = params.get("mode") === "jwt" ? "jwt" : "callback";
const $ = (id) => document.getElementById(id);
$("me").textContent = name;
$(mode).className = "on";

// What the page has seen, for people and for tests: demo.until(check) resolves with the
// first truthy check() once it holds (checked after every change).
const demo = window.demo = {name, mode, token: null, events: [], who: [], listeners: []};
demo.until = (check) => new Promise((resolve) => {
  const test = () => { const value = check(); if (value) resolve(value); return !!value; };
  if (!test()) demo.listeners.push(test);
});
function changed() { demo.listeners = demo.listeners.filter((test) => !test()); }

function text(tag, parts) {  // an element of text and <b>/<code> parts, never HTML
  const node = document.createElement(tag);
  for (const part of parts) {
    if (typeof part === "string") { node.append(part); continue; }
    const inner = document.createElement(part[0]);
    inner.textContent = part[1];
    node.append(inner);
  }
  return node;
}
function setStory(id, parts, done) {
  const item = $(id);
  item.replaceChildren(...text("span", parts).childNodes);
  if (done) item.className = "done";
}

if (mode === "jwt") {
  setStory("step-auth", [
    "The page fetched a JWT from ", ["code", "/demo/token"], " and put it in the stream's ",
    "address: the gateway checked its signature and asked the backend nothing. It expires ",
    "every " + TTL + " s; the page then reopens the stream with a fresh one and the last ",
    "event id, and replay fills the gap."]);
  $("push-about").replaceChildren(...text("span", [
    "The form goes to the backend (", ["code", "POST /demo/push"], "), which calls the ",
    "gateway's internal API for your user (", ["code", '{"user": "' + name + '"}'],
    "): the backend never heard this stream's token, so it reaches all your tabs."]).childNodes);
} else {
  setStory("step-auth", [
    "Before answering, the gateway called the demo backend back (", ["code", "POST /callback"],
    ") with a token it made for this tab. Waiting for the backend's welcome..."]);
  $("push-about").replaceChildren(...text("span", [
    "The form goes to the backend (", ["code", "POST /demo/push"], "), which calls the ",
    "gateway's internal API with this tab's token, as your own backend would."]).childNodes);
}
$("about-internal").replaceChildren(...text("span", [
  "The internal API (", ["code", "/internal/send"], ", ", ["code", "/internal/presence"],
  ", the dashboard at ", ["code", INTERNAL + "/internal/dashboard"], ") listens on ",
  ["code", INTERNAL], (SECRET_SET
    ? ", behind your INTERNAL_SECRET."
    : " only: this machine can push, nobody else can, so it needs no secret.")]).childNodes);

function curlLine() {
  const target = demo.mode === "jwt" ? {user: name} : {token: demo.token};
  const body = JSON.stringify({...target, event: {name: "note", data: "hello from curl"}});
  return "curl -X POST " + INTERNAL + "/internal/send -H 'Content-Type: application/json' "
    + (SECRET_SET ? "-H \\"Authorization: Bearer $INTERNAL_SECRET\\" " : "")
    + "-d '" + body + "'";
}
function showCurl() { $("curl").textContent = curlLine(); }
$("copy").onclick = async () => {
  try { await navigator.clipboard.writeText(curlLine()); $("copied").textContent = "copied"; }
  catch (e) { getSelection().selectAllChildren($("curl")); $("copied").textContent = "selected"; }
};

// A channel event carries its own id; an event sent to one token has none (the browser's
// lastEventId then still holds the previous one, so it is not shown).
function show(kind, e, channel) {
  const id = channel ? e.lastEventId : "";
  demo.events.push({type: kind, id, data: e.data});
  const item = text("li", [["b", kind + (id ? " #" + id : "")], e.data]);
  $("events").prepend(item);
  while ($("events").children.length > 40) $("events").lastChild.remove();
  changed();
}
async function who() {
  const body = await (await fetch("/who")).json();
  demo.who = body.users.map((u) => u.user);
  const users = body.users.map((u) => u.user + (u.streams > 1 ? " (" + u.streams + " tabs)" : ""));
  $("who").textContent = users.join(", ") || "nobody";
  changed();
}
async function post(path, body) {
  const answer = await fetch(path, {method: "POST", body: JSON.stringify(body),
                                    headers: {"Content-Type": "application/json"}});
  return answer.ok ? "" : (await answer.json()).error.message;
}
$("push").onsubmit = async (e) => {
  e.preventDefault();
  const target = mode === "jwt" ? {user: name} : {token: demo.token};
  const error = await post("/demo/push", {...target, text: $("push-text").value});
  if (error) show("push refused", {data: error});
};
$("say").onsubmit = async (e) => {
  e.preventDefault();
  const error = await post("/demo/say", {name, text: $("say-text").value});
  if (error) show("say refused", {data: error});
  else $("say-text").value = "";
};

let lastEventId = "";
async function connect() {
  let url = "/sse/demo?name=" + encodeURIComponent(name);
  if (mode === "jwt") {
    const answer = await fetch("/demo/token?name=" + encodeURIComponent(name), {method: "POST"});
    if (!answer.ok) { $("state").textContent = "no token: " + await answer.text(); return; }
    url = "/sse/demo?jwt=" + encodeURIComponent(await answer.text());
    if (lastEventId) url += "&lastEventId=" + encodeURIComponent(lastEventId);
    showCurl();
  }
  $("stream-url").textContent = 'new EventSource("' + url.replace(/jwt=[^&]+/, "jwt=...") + '")';
  const source = new EventSource(url);
  source.onopen = () => {
    $("state").textContent = "open"; $("state").className = "open";
    $("step-open").className = "done"; who();
    // A second tab of a user already online is no presence event: ask now and then as well.
    if (!demo.whoTimer) demo.whoTimer = setInterval(who, 3000);
  };
  source.onerror = () => { $("state").textContent = "reconnecting"; $("state").className = "bad"; };
  source.addEventListener("welcome", (e) => {
    const hello = JSON.parse(e.data);
    demo.token = hello.token;
    setStory("step-auth", [
      "Before answering, the gateway called the demo backend back (",
      ["code", 'POST /callback {"action": "connect", ...}'], "). The backend said yes (user ",
      ["b", hello.user], ", channels ", ["code", "clock"], " and ", ["code", "lobby"],
      ") and kept the token the gateway made for this tab: ", ["code", hello.token],
      ". It greeted the token at once; the gateway held that event until the stream opened."],
      true);
    showCurl();
    show("welcome", e);
  });
  source.addEventListener("tick", (e) => {
    lastEventId = e.lastEventId;
    $("tick").textContent = "the last one said " + e.data + " (event id " + e.lastEventId + ")";
    $("step-ticks").className = "done";
    show("tick", e, true);
  });
  source.addEventListener("note", (e) => show("note", e));
  source.addEventListener("chat", (e) => {
    lastEventId = e.lastEventId;
    const said = JSON.parse(e.data);
    $("chat").prepend(text("li", [["b", said.from + ":"], " " + said.text]));
    show("chat", e, true);
  });
  for (const type of ["presence_join", "presence_leave"]) {
    source.addEventListener(type, (e) => {
      lastEventId = e.lastEventId; show(type, e, true); who();
    });
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


def user_of(url: str) -> str:
    """The user a demo stream belongs to: its ``name`` query parameter (``guest`` without)."""
    names = parse_qs(urlsplit(url).query).get("name") or ["guest"]
    return clean_name(names[0]) or "guest"


def clean_name(name: str) -> str:
    """``name`` as a user id: its printable ASCII characters, at most 40 (may be empty)."""
    return "".join(c for c in name if "!" <= c <= "~")[:40]


class DemoBackend:
    """The demo backend's state and its calls to the gateway's internal API (with the secret,
    if one is set): the tokens it accepted, and what it sends."""

    def __init__(self, internal_url: str, secret: str | None) -> None:
        self.internal_url = internal_url
        self.secret_set = secret is not None
        self.headers = {"Content-Type": "application/json"}
        if secret:
            self.headers["Authorization"] = "Bearer " + secret
        #: Tokens whose connect this backend accepted and whose disconnect it has not heard.
        self.tokens: set[str] = set()

    async def send(self, item: dict[str, object]) -> tuple[int, bytes]:
        """``POST /internal/send`` with ``item``; the gateway's status and body."""
        response = await AsyncHTTPClient().fetch(
            self.internal_url + "/internal/send",
            method="POST",
            body=json.dumps(item),
            headers=self.headers,
            raise_error=False,
        )
        if response.code != 200:
            log.warning("backend: send answered", extra=fields(status=response.code))
        return response.code, response.body or b""

    async def presence(self, channel: str) -> bytes:
        """The JSON of ``/internal/presence`` for ``channel``."""
        response = await AsyncHTTPClient().fetch(
            self.internal_url + "/internal/presence?channel=" + channel,
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


class JSONHandler(RequestHandler):
    """Base of the demo backend's routes: ``backend`` injected, JSON bodies in, JSON errors
    (``{"error": {"code", "message"}}``) out."""

    def initialize(self, backend: DemoBackend) -> None:
        self.backend = backend

    def fail(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` with a JSON error."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish({"error": {"code": code, "message": message}})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish({"error": {"code": "ERROR", "message": self._reason}})

    def json_body(self) -> dict[str, Any] | None:
        """The request body as a JSON object, or None (and a 400 answered)."""
        try:
            body = json.loads(self.request.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.fail(400, "INVALID_JSON", "the body must be a JSON object")
            return None
        return body

    def text_of(self, body: dict[str, Any]) -> str | None:
        """``body["text"]`` if it is a string of 1 to MAX_TEXT characters, else None (and a
        400 answered)."""
        text = body.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT:
            self.fail(
                400, "INVALID_TEXT", "'text' must be a string of 1 to %d characters" % MAX_TEXT
            )
            return None
        return text


class CallbackHandler(JSONHandler):
    """The demo backend's callback endpoint: accept everyone as the user their page names,
    greet them with their token, forget tokens at their disconnect."""

    async def post(self) -> None:
        body = json.loads(self.request.body)
        token = body["token"]
        if body["action"] == "connect":
            log.info("backend: connect", extra=fields(token=token))
            user = user_of(body["request"]["url"])
            self.backend.tokens.add(token)
            # Sent while the connect callback is still in flight: the gateway buffers it.
            asyncio.get_running_loop().create_task(self._greet(token, user))
            self.finish({"channels": ["clock", LOBBY], "user": user, "info": {"name": user}})
        else:
            log.info("backend: disconnect", extra=fields(token=token, reason=body["reason"]))
            self.backend.tokens.discard(token)
            self.finish({})

    async def _greet(self, token: str, user: str) -> None:
        hello = json.dumps({"token": token, "user": user})
        await self.backend.send({"token": token, "event": {"name": "welcome", "data": hello}})


class PushHandler(JSONHandler):
    """``POST /demo/push`` ``{"token": ..., "text": ...}`` (or ``"user"`` instead of
    ``"token"``): an event ``note`` to that stream (or that user's streams), sent through the
    internal API as a backend sends. Only tokens this backend accepted: 404 for others. The
    answer is the gateway's."""

    async def post(self) -> None:
        body = self.json_body()
        if body is None:
            return
        text = self.text_of(body)
        if text is None:
            return
        token, user = body.get("token"), body.get("user")
        event = {"name": "note", "data": text}
        if isinstance(token, str) and user is None:
            if token not in self.backend.tokens:
                self.fail(404, "TOKEN_NOT_FOUND", "no open stream has this token")
                return
            item: dict[str, object] = {"token": token, "event": event}
        elif isinstance(user, str) and token is None and clean_name(user) == user and user:
            item = {"user": user, "event": event}
        else:
            self.fail(400, "INVALID_TARGET", "give exactly one of 'token' and 'user' (a name)")
            return
        status, answer = await self.backend.send(item)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(answer)


class SayHandler(JSONHandler):
    """``POST /demo/say`` ``{"name": ..., "text": ...}``: an event ``chat`` on the lobby
    channel, data ``{"from": name, "text": text}``, for every tab on it."""

    async def post(self) -> None:
        body = self.json_body()
        if body is None:
            return
        text = self.text_of(body)
        if text is None:
            return
        name = body.get("name")
        if not isinstance(name, str) or not clean_name(name):
            self.fail(400, "INVALID_NAME", "'name' must be a non-empty string")
            return
        said = json.dumps({"from": clean_name(name), "text": text}, ensure_ascii=False)
        status, answer = await self.backend.send(
            {"channel": LOBBY, "event": {"name": "chat", "data": said}}
        )
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(answer)


class PageHandler(JSONHandler):
    """Serves the demo page on the gateway's port."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        page = (
            PAGE.replace("__TTL__", str(TOKEN_TTL))
            .replace("__INTERNAL__", json.dumps(self.backend.internal_url))
            .replace("__SECRET__", json.dumps(self.backend.secret_set))
        )
        self.finish(page)


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


class WhoHandler(JSONHandler):
    """``GET /who`` on the gateway's port: the lobby's presence, for the page."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(await self.backend.presence(LOBBY))


def with_jwt_secret(settings: Settings) -> Settings:
    """``settings`` with a random ``JWT_SECRET`` when none is set and the ``jwt`` extra is
    installed (without it the page's JWT mode says what to install)."""
    if settings.jwt_configured or importlib.util.find_spec("jwt") is None:
        return settings
    return replace(settings, jwt_secret=secrets.token_urlsafe(32))


def bind_internal(settings: Settings) -> list[socket.socket]:
    """The internal API's sockets, on 127.0.0.1 only: ``INTERNAL_PORT`` if it is set (a
    :class:`~tornado_sse.server.ListenError` if it is taken), else ``PORT`` + 1, else (taken)
    a free port."""
    if settings.internal_port is not None:
        return server.bind(settings.internal_port, LOOPBACK, "INTERNAL_PORT")
    if settings.port < 65535:
        try:
            return server.bind(settings.port + 1, LOOPBACK, "INTERNAL_PORT")
        except server.ListenError:
            pass  # PORT + 1 is taken: any free port will do (the page and the log name it)
    return server.bind(0, LOOPBACK, "INTERNAL_PORT")


async def run(argv: Sequence[str], jwt_mode: bool = False) -> int:
    settings = with_jwt_secret(parse(argv, prog="tornado-sse demo"))
    backend_socket = bind_sockets(0, LOOPBACK)
    backend_port = backend_socket[0].getsockname()[1]
    # First the public port: a port in use stops the demo at once.
    main_sockets = server.bind(settings.port, settings.address or None, "PORT")
    try:
        internal_sockets = bind_internal(settings)
    except server.ListenError:
        for sock in main_sockets:
            sock.close()
        raise
    internal_port = internal_sockets[0].getsockname()[1]
    settings = replace(
        settings,
        internal_port=internal_port,
        callback_url="http://%s:%d/callback" % (LOOPBACK, backend_port),
    )
    if not settings.presence_events:
        settings = replace(settings, presence_events=LOBBY, presence_leave_delay_seconds=1.0)

    backend = DemoBackend("http://%s:%d" % (LOOPBACK, internal_port), settings.internal_secret)
    inject = {"backend": backend}
    backend_server = HTTPServer(Application([(r"/callback", CallbackHandler, inject)]))
    backend_server.add_sockets(backend_socket)
    app = make_app(settings)
    app.add_handlers(
        r".*",
        [
            (r"/", PageHandler, inject),
            (r"/who", WhoHandler, inject),
            (r"/demo/push", PushHandler, inject),
            (r"/demo/say", SayHandler, inject),
            (r"/demo/token", TokenHandler, {"secret": settings.jwt_secret}),
        ],
    )
    log.info(
        "demo: open http://localhost:%d/%s in a browser (Ctrl-C stops); the internal API and "
        "its dashboard are on %s, for this machine only",
        settings.port,
        "?mode=jwt" if jwt_mode else "",
        backend.internal_url + "/internal/dashboard",
    )
    clock = asyncio.get_running_loop().create_task(backend.clock())
    status = await serve(settings, app, server.Sockets(main_sockets, internal_sockets))
    clock.cancel()
    backend_server.stop()
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

"""A complete Flask backend for tornado_sse: who may connect, and what they receive.

Run it beside a gateway (see README.md next to this file)::

    SSE_GATEWAY_URL=http://127.0.0.1:3000 python examples/flask_backend/app.py
    CALLBACK_URL=http://127.0.0.1:5000/sse/callback tornado-sse

Routes:

- ``POST /sse/callback``: the gateway's connect and disconnect callbacks. With
  ``SSE_CALLBACK_SECRET`` set, the ``X-SSE-Signature`` of each is verified first (401 if it
  does not match). A connect is accepted for a user named by ``?user=<name>`` in the stream URL
  or by a ``user=<name>`` cookie (a stand-in for your real session check: this demo trusts
  whatever name it is given), and subscribes the stream to ``user.<name>`` and ``broadcast``.
- ``POST /notify/<user>``: publish an event to every open stream of that user (all tabs).
- ``POST /broadcast``: publish an event to every stream.
- ``GET /tokens``: the streams this backend believes open, ``{"count": n, "tokens": {token:
  user}}``; a demo and test aid (do not expose tokens in a real application).
- ``GET /healthz``: ``{"status": "ok"}``.
- ``GET /``: a small page that opens a stream as ``?user=``, with a button that notifies that
  user with the named event ``note`` (which the page listens to with ``addEventListener``) and
  one that broadcasts an unnamed event (``onmessage``).

The body of ``/notify`` and ``/broadcast`` is JSON ``{"data": "...", "name": "optional event
name"}``, or any other body, sent as the event's data as it is.
"""

from __future__ import annotations

import html
import json
import os
import re
import threading
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Flask, Response, abort, jsonify, request

from tornado_sse_client import (
    SIGNATURE_HEADER,
    Gateway,
    GatewayClientError,
    GatewayUnavailable,
    verify,
)

#: A user name that is also usable in a channel name (printable ASCII, no spaces).
USER_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

BROADCAST = "broadcast"


def user_channel(user: str) -> str:
    """The channel of every stream of ``user``."""
    return "user." + user


class TokenStore:
    """The streams the gateway told us about: token -> user. Thread-safe (the Flask server
    handles requests in threads). A real backend would keep this in its database or Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, str] = {}

    def remember(self, token: str, user: str) -> None:
        with self._lock:
            self._users[token] = user

    def forget(self, token: str) -> str | None:
        with self._lock:
            return self._users.pop(token, None)

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._users)


def authenticate(captured: dict[str, Any]) -> str | None:
    """The user a stream request belongs to, from the request the gateway captured.

    DEMO ONLY: the name is taken on trust from ``?user=`` or the ``user`` cookie. A real
    backend checks its session cookie or an ``Authorization`` header here, exactly as it
    would for any other request of the same browser.
    """
    url = captured.get("url") or ""
    headers = captured.get("headers") or {}
    names = parse_qs(urlsplit(url).query).get("user", [])
    if not names:
        try:
            cookie = SimpleCookie(headers.get("cookie", ""))
        except CookieError:
            cookie = SimpleCookie()
        if "user" in cookie:
            names = [cookie["user"].value]
    name = names[-1] if names else None
    return name if name is not None and USER_RE.fullmatch(name) else None


def event_from_body() -> tuple[str, str | None]:
    """``(data, name)`` of the event to publish, from the request body."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("data"), str):
            abort(400, 'the JSON body must be {"data": "<text>", "name": "<optional>"}')
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            abort(400, "name must be a string")
        return body["data"], name
    return request.get_data(as_text=True), None


def create_app(
    gateway: Gateway | None = None,
    callback_secret: str | None = None,
    public_gateway_url: str | None = None,
) -> Flask:
    """The Flask application. Without arguments everything comes from the environment:
    ``SSE_GATEWAY_URL``, ``SSE_INTERNAL_SECRET``, ``SSE_CALLBACK_SECRET``, ``SSE_PUBLIC_URL``."""
    if gateway is None:
        gateway = Gateway(
            os.environ.get("SSE_GATEWAY_URL", "http://127.0.0.1:3000"),
            secret=os.environ.get("SSE_INTERNAL_SECRET") or None,
        )
    if callback_secret is None:
        callback_secret = os.environ.get("SSE_CALLBACK_SECRET") or None
    if public_gateway_url is None:
        public_gateway_url = os.environ.get("SSE_PUBLIC_URL", "http://127.0.0.1:3000")

    app = Flask(__name__)
    tokens = TokenStore()
    app.extensions["sse_tokens"] = tokens

    @app.post("/sse/callback")
    def sse_callback() -> Any:
        raw = request.get_data()  # the raw bytes: the signature covers them exactly
        if callback_secret is not None and not verify(
            raw, request.headers.get(SIGNATURE_HEADER), callback_secret
        ):
            app.logger.warning("refused a callback with a bad or missing signature")
            return jsonify(error="bad signature"), 401
        try:
            callback = json.loads(raw)
        except ValueError:
            return jsonify(error="not JSON"), 400
        token = callback.get("token")
        if not isinstance(token, str):
            return jsonify(error="no token"), 400

        if callback.get("action") == "connect":
            user = authenticate(callback.get("request") or {})
            if user is None:
                # The browser gets 401 BACKEND_AUTH_FAILED, and its EventSource stops.
                return jsonify(error="log in first: ?user=<name> or a user=<name> cookie"), 401
            tokens.remember(token, user)
            app.logger.info(
                "stream open user=%s request_id=%s", user, request.headers.get("X-Request-ID")
            )
            return jsonify(channels=[user_channel(user), BROADCAST])

        if callback.get("action") == "disconnect":
            user = tokens.forget(token)
            app.logger.info("stream closed user=%s reason=%s", user, callback.get("reason"))
            return "", 204

        return jsonify(error="unknown action"), 400

    def publish(channel: str) -> Any:
        data, name = event_from_body()
        try:
            gateway.publish(channel, data, name=name)
        except GatewayUnavailable as exc:
            return jsonify(error=str(exc)), 503
        except GatewayClientError as exc:
            return jsonify(error=str(exc), code=exc.code), 502
        return jsonify(status="ok", channel=channel)

    @app.post("/notify/<user>")
    def notify(user: str) -> Any:
        if not USER_RE.fullmatch(user):
            abort(404)
        return publish(user_channel(user))

    @app.post("/broadcast")
    def broadcast() -> Any:
        return publish(BROADCAST)

    @app.get("/tokens")
    def list_tokens() -> Any:
        snapshot = tokens.snapshot()
        return jsonify(count=len(snapshot), tokens=snapshot)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @app.get("/")
    def index() -> Response:
        user = request.args.get("user", "alice")
        if not USER_RE.fullmatch(user):
            abort(400)
        stream_url = "%s/sse/demo?user=%s" % (public_gateway_url.rstrip("/"), user)
        page = _PAGE % {
            "user": html.escape(user),
            "stream_url": json.dumps(stream_url),
            "notify": json.dumps("/notify/" + user),
        }
        return Response(page, mimetype="text/html")

    return app


_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>tornado_sse + Flask: %(user)s</title>
<h1>Signed in as %(user)s</h1>
<p><button id="me">notify me</button> sends a named event, <code>note</code>, to your streams
only; <button id="all">broadcast</button> sends an unnamed one (a <code>message</code>) to
everyone.</p>
<ul id="log"></ul>
<script>
const log = (text) => {
  const li = document.createElement("li");
  li.textContent = new Date().toLocaleTimeString() + " " + text;
  document.getElementById("log").prepend(li);
};
const source = new EventSource(%(stream_url)s);
source.onopen = () => log("stream open");
source.onerror = () => log("stream error (the browser retries)");
// Events without a name arrive as "message"; a named event only reaches a listener for its
// name (onmessage never sees it).
source.onmessage = (e) => log("message: " + e.data);
source.addEventListener("note", (e) => log("note #" + e.lastEventId + ": " + e.data));
const post = (url, body) => fetch(url, {
  method: "POST",
  headers: {"Content-Type": "application/json"},
  body: JSON.stringify(body),
});
document.getElementById("me").onclick = () =>
  post(%(notify)s, {data: "hello, just you", name: "note"});
document.getElementById("all").onclick = () => post("/broadcast", {data: "hello, everyone"});
</script>
"""


if __name__ == "__main__":
    # The development server, threaded: a callback may arrive while /notify is publishing.
    create_app().run(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "5000")),
        threaded=True,
    )

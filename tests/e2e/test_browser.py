"""A real browser: headless Chromium's own EventSource against the gateway.

The page reports every ``open``, ``error`` and event back to the test server with ``fetch``, so
the test awaits those reports instead of polling the browser. Selenium's blocking calls run in a
worker thread while the IOLoop keeps serving the gateway.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from selenium import webdriver
from tornado.web import RequestHandler

from tests.support.backend import Answer
from tests.support.browser import start_browser
from tests.support.tokens import SECRET
from tests.support.waiting import wait_until
from tornado_sse.client import mint_jwt

PAGE = """<!doctype html><meta charset="utf-8"><title>e2e</title><script>
let seq = 0;
const params = new URLSearchParams(location.search);
function report(item) {
  item.seq = seq++;  // reports travel on parallel requests: the test re-orders them
  item.page = params.get("page");
  fetch("/report", {method: "POST", body: JSON.stringify(item)});
}
const source = new EventSource(params.get("stream"));
source.onopen = () => report({kind: "open"});
source.onerror = () => report({kind: "error", readyState: source.readyState});
for (const type of ["message", "update", "history_gap", "presence_join", "presence_leave"]) {
  source.addEventListener(type, (e) => report(
    {kind: "event", type: e.type, data: e.data, lastEventId: e.lastEventId}));
}
</script>"""


class Reports:
    """What the page reported, with a way to await a condition on it."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def add(self, item: dict[str, Any]) -> None:
        self.items.append(item)
        self._changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The reports of ``kind``, in the order the page made them."""
        return sorted((i for i in self.items if i["kind"] == kind), key=lambda i: i["seq"])

    async def wait_for(self, predicate: Any, timeout: float = 15.0) -> None:
        """Wait until ``predicate(self)`` holds, re-checking after each report."""
        await wait_until(lambda: predicate(self), self._changed, timeout)


class PageHandler(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(PAGE)


class ReportHandler(RequestHandler):
    def initialize(self, reports: Reports) -> None:
        self.reports = reports

    def post(self) -> None:
        self.reports.add(json.loads(self.request.body))
        self.set_status(204)


async def visit(driver: webdriver.Chrome, url: str) -> None:
    await asyncio.get_running_loop().run_in_executor(None, driver.get, url)


def serve_page(gw: Any) -> Reports:
    reports = Reports()
    gw.app.add_handlers(
        r".*", [(r"/page", PageHandler), (r"/report", ReportHandler, {"reports": reports})]
    )
    return reports


@pytest.mark.gen_test(timeout=60)
async def test_browser_receives_named_unnamed_multiline_utf8_events_exactly(
    gateway, backend, browser
):
    gw = gateway()
    reports = serve_page(gw)
    await visit(browser, gw.base_url + "/page?stream=/sse/e2e")
    await reports.wait_for(lambda r: r.of("open"))
    (connect,) = backend.of("connect")
    sent = [
        {"data": "plain"},
        {"name": "update", "data": "line one\nline two\n\nline four"},
        {"name": "update", "data": "héllo wörld ✓ 🎉 — 日本語"},
        {"data": "crlf\r\nand\rcr", "id": "42"},
        {"data": ""},
    ]
    for event in sent:
        status, _ = await gw.send({"token": connect.token, "event": event})
        assert status == 200
    await reports.wait_for(lambda r: len(r.of("event")) >= len(sent))
    got = [(e["type"], e["data"]) for e in reports.of("event")]
    assert got == [
        ("message", "plain"),
        ("update", "line one\nline two\n\nline four"),
        ("update", "héllo wörld ✓ 🎉 — 日本語"),
        ("message", "crlf\nand\ncr"),
        ("message", ""),
    ]
    assert reports.of("event")[3]["lastEventId"] == "42"


@pytest.mark.gen_test(timeout=60)
async def test_browser_reconnects_after_close_and_replays_missed_channel_events(
    gateway, backend, browser
):
    backend.connect_answer = Answer(body=b'{"channels": ["feed"]}')
    gw = gateway()
    reports = serve_page(gw)

    async def publish(data: str) -> None:
        status, _ = await gw.send({"channel": "feed", "event": {"data": data}})
        assert status == 200

    await visit(browser, gw.base_url + "/page?stream=/sse/feed")
    await reports.wait_for(lambda r: r.of("open"))
    for i in range(3):
        await publish("before-%d" % i)
    await reports.wait_for(lambda r: len(r.of("event")) >= 3)
    (first,) = backend.of("connect")

    status, _ = await gw.send({"token": first.token, "close": True})
    assert status == 200
    await backend.wait_for_calls("disconnect", token=first.token)
    for i in range(3):  # published while the browser is away
        await publish("missed-%d" % i)

    second = (await backend.wait_for_calls("connect", count=2, timeout=15))[1]
    last_before = reports.of("event")[2]["lastEventId"]
    assert second.body["request"]["headers"]["last-event-id"] == last_before
    await reports.wait_for(lambda r: len(r.of("open")) >= 2)
    await publish("after")
    await reports.wait_for(lambda r: len(r.of("event")) >= 7)
    datas = [e["data"] for e in reports.of("event")]
    assert datas == [
        "before-0",
        "before-1",
        "before-2",
        "missed-0",
        "missed-1",
        "missed-2",
        "after",
    ]
    ids = [int(e["lastEventId"]) for e in reports.of("event")]
    assert ids == sorted(set(ids))


@pytest.mark.gen_test(timeout=60)
async def test_backend_401_stops_the_browser_reconnect_loop(gateway, backend, browser):
    backend.connect_answer = Answer(status=401, body=b"no")
    gw = gateway()
    reports = serve_page(gw)
    await visit(browser, gw.base_url + "/page?stream=/sse/denied")
    await reports.wait_for(lambda r: r.of("error"))
    # readyState CLOSED (2): the browser failed the connection and will not retry by itself.
    assert [e["readyState"] for e in reports.of("error")] == [2]
    assert len(backend.of("connect")) == 1
    assert reports.of("open") == []


@pytest.fixture
def second_browser():
    """Another browser of its own (another person), for this test only."""
    driver = start_browser()
    yield driver
    driver.quit()


@pytest.mark.gen_test(timeout=90)
async def test_a_page_in_a_room_sees_a_second_browser_join_and_leave(
    gateway, backend, browser, second_browser
):
    def answer(body: dict[str, Any]) -> Answer:
        user = body["request"]["url"].split("?")[0].rsplit("/", 1)[1]
        reply = {"channels": ["room"], "user": user, "info": {"name": user.title()}}
        return Answer(body=json.dumps(reply).encode())

    backend.answer_for = answer
    gw = gateway(presence_events="room", presence_leave_delay_seconds=0.3)
    reports = serve_page(gw)

    def seen_by_ann(kind: str) -> list[dict[str, Any]]:
        return [
            e
            for e in reports.of("event")
            if e["page"] == "ann" and e["type"] == kind and json.loads(e["data"])["user"] == "bob"
        ]

    await visit(browser, gw.base_url + "/page?page=ann&stream=/sse/room/ann")
    await reports.wait_for(lambda r: any(e["page"] == "ann" for e in r.of("open")))
    await visit(second_browser, gw.base_url + "/page?page=bob&stream=/sse/room/bob")
    await reports.wait_for(lambda r: seen_by_ann("presence_join"))
    (join,) = seen_by_ann("presence_join")
    assert json.loads(join["data"]) == {"user": "bob", "info": {"name": "Bob"}}
    presence = json.loads((await gw.get("/internal/presence?channel=room", internal=True)).body)
    assert [u["user"] for u in presence["users"]] == ["ann", "bob"]

    # Bob's page closes its EventSource (a page may be kept alive in the back-forward cache
    # after a navigation, so leaving is the page's own close here).
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, second_browser.execute_script, "source.close()")
    await reports.wait_for(lambda r: seen_by_ann("presence_leave"))
    (leave,) = seen_by_ann("presence_leave")
    assert json.loads(leave["data"]) == {"user": "bob", "info": {"name": "Bob"}}
    assert int(leave["lastEventId"]) > int(join["lastEventId"])
    await visit(browser, "about:blank")


JWT_PAGE = """<!doctype html><meta charset="utf-8"><title>e2e jwt</title><script>
let seq = 0;
function report(item) {
  item.seq = seq++;
  fetch("/report", {method: "POST", body: JSON.stringify(item)});
}
const stream = new URLSearchParams(location.search).get("stream");
let lastEventId = "";
// The README's recipe: on jwt_expired, fetch a fresh token and reopen from the last id seen.
async function connect() {
  const token = await (await fetch("/token", {method: "POST"})).text();
  let url = stream + "?jwt=" + encodeURIComponent(token);
  if (lastEventId) url += "&lastEventId=" + encodeURIComponent(lastEventId);
  const source = new EventSource(url);
  source.onopen = () => report({kind: "open"});
  source.onmessage = (e) => {
    lastEventId = e.lastEventId;
    report({kind: "event", data: e.data, lastEventId: e.lastEventId});
  };
  source.addEventListener("history_gap", (e) => report({kind: "gap", data: e.data}));
  source.addEventListener("jwt_expired", () => {
    report({kind: "expired"});
    source.close();
    connect();
  });
}
connect();
</script>"""


class TokenDesk:
    """Mints the page's JWTs: the first expires ``first_ttl`` seconds after it is asked for,
    the others an hour later; every one after the first waits for :attr:`release`."""

    def __init__(self, secret: str, first_ttl: float) -> None:
        self.secret = secret
        self.first_ttl = first_ttl
        self.asked = 0
        self.release = asyncio.Event()
        self.changed = asyncio.Event()

    async def mint(self) -> str:
        self.asked += 1
        self.changed.set()
        if self.asked == 1:
            return mint_jwt("42", ["feed"], self.first_ttl, secret=self.secret)
        await self.release.wait()
        return mint_jwt("42", ["feed"], 3600, secret=self.secret)


class JWTPageHandler(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(JWT_PAGE)


class TokenHandler(RequestHandler):
    def initialize(self, desk: TokenDesk) -> None:
        self.desk = desk

    async def post(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.finish(await self.desk.mint())


@pytest.mark.gen_test(timeout=60)
async def test_browser_reopens_with_a_fresh_jwt_and_last_event_id_and_replays_what_it_missed(
    gateway, backend, browser
):
    gw = gateway(jwt_secret=SECRET)
    reports = Reports()
    desk = TokenDesk(SECRET, first_ttl=3)
    gw.app.add_handlers(
        r".*",
        [
            (r"/jwt-page", JWTPageHandler),
            (r"/token", TokenHandler, {"desk": desk}),
            (r"/report", ReportHandler, {"reports": reports}),
        ],
    )

    async def publish(data: str) -> None:
        status, _ = await gw.send({"channel": "feed", "event": {"data": data}})
        assert status == 200

    await visit(browser, gw.base_url + "/jwt-page?stream=/sse/feed")
    await reports.wait_for(lambda r: r.of("open"))
    for i in range(3):
        await publish("before-%d" % i)
    await reports.wait_for(lambda r: len(r.of("event")) >= 3)
    await reports.wait_for(lambda r: r.of("expired"), timeout=10)
    await wait_until(lambda: desk.asked >= 2, desk.changed, 10)
    for i in range(3):  # published while the page fetches its new token
        await publish("missed-%d" % i)
    desk.release.set()

    await reports.wait_for(lambda r: len(r.of("open")) >= 2)
    await publish("after")
    await reports.wait_for(lambda r: len(r.of("event")) >= 7)
    datas = [e["data"] for e in reports.of("event")]
    missed = ["missed-0", "missed-1", "missed-2"]
    assert datas == ["before-0", "before-1", "before-2", *missed, "after"]
    assert reports.of("gap") == []
    listing = json.loads((await gw.get("/internal/connections", internal=True)).body)
    (second,) = listing["connections"]
    assert "&lastEventId=%s" % reports.of("event")[2]["lastEventId"] in second["url"]
    assert second["user"] == "42"
    assert backend.of("connect") == []  # neither stream asked the backend
    (expired,) = await backend.wait_for_calls("disconnect")
    assert (expired.body["reason"], expired.body["detail"]) == ("server_closed", "jwt_expired")

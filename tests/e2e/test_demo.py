"""``tornado-sse demo`` in headless Chromium, two tabs (ann and bob): the page says what
happened (the connect callback, the token it brought, the ticks), a push from its form reaches
its own stream, the curl line it shows works as printed, a word said to the lobby reaches the
other tab, and the online list shows both. The demo does not warn about its internal API: it
listens on loopback only. Both screenshots of docs/images are taken too, into a scratch
directory (``python3 -m tests.support.screenshots`` makes the committed ones).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest

from tests.support.browser import in_browser
from tests.support.screenshots import PNG_MAGIC, DemoTabs, internal_url, start_demo, take


@pytest.mark.gen_test(timeout=120)
async def test_demo_explains_itself_pushes_broadcasts_and_lists_who_is_online(browser):
    demo = await start_demo()
    try:
        internal = internal_url(demo)
        assert internal.startswith("http://127.0.0.1:")
        assert not any("internal API is served on the public port" in line for line in demo.log)
        # The public port serves no internal route; the loopback one does, without a secret.
        assert (await demo.send({"channel": "lobby"}))[0] == 404
        tabs = DemoTabs(browser, demo.base_url)

        await in_browser(tabs.open, "ann")
        ann_token = await in_browser(tabs.until, "window.demo.token")
        await in_browser(tabs.open, "bob")
        bob_token = await in_browser(tabs.until, "window.demo.token")
        assert ann_token != bob_token
        # Every token the page names is one the backend heard in a connect callback.
        connects = [line for line in demo.log if "backend: connect" in line]
        assert any(ann_token in line for line in connects), demo.log
        assert any(bob_token in line for line in connects), demo.log

        # The story, in plain words, with the real token.
        await in_browser(tabs.on("ann").until, "window.demo.events.some((e) => e.type === 'tick')")
        story = await in_browser(tabs.value, "document.getElementById('story').innerText")
        assert "called the demo backend back" in story and ann_token in story
        assert "user ann" in story and "clock" in story and "the last one said" in story

        # A push from the form arrives on ann's own stream, and on no other.
        await in_browser(tabs.submit, "push", "push-text", "a note for ann")
        await in_browser(tabs.received, "note", "a note for ann")

        # The curl line names the real address and token, and works as printed.
        curl = await in_browser(tabs.value, "document.getElementById('curl').textContent")
        assert internal + "/internal/send" in curl and ann_token in curl
        assert shutil.which("curl"), "curl is needed (tests/run.py installs it)"
        argv = shlex.split(curl)
        answer = await in_browser(
            lambda: subprocess.run(argv, capture_output=True, text=True, timeout=10)
        )
        assert json.loads(answer.stdout) == {"status": "ok"}, answer
        await in_browser(tabs.received, "note", "hello from curl")

        # Bob says something to the lobby; ann's tab shows it (and bob's own, as a channel).
        await in_browser(tabs.on("bob").submit, "say", "say-text", "hello lobby, bob here")
        await in_browser(tabs.received, "chat", "hello lobby, bob here")
        await in_browser(tabs.on("ann").received, "chat", "hello lobby, bob here")
        chat = await in_browser(tabs.value, "document.getElementById('chat').innerText")
        assert "bob: hello lobby, bob here" in chat

        # Who is online: both, in each tab.
        both = "window.demo.who.includes('ann') && window.demo.who.includes('bob')"
        await in_browser(tabs.until, both)
        await in_browser(tabs.on("bob").until, both)
        shown = await in_browser(tabs.value, "document.getElementById('who').textContent")
        assert "ann" in shown and "bob" in shown

        # Bob's tab never got ann's notes: they went to her token only.
        notes = await in_browser(
            tabs.value, "window.demo.events.filter((e) => e.type === 'note').length"
        )
        assert notes == 0
        await in_browser(tabs.close, "bob")
        await in_browser(tabs.on("ann").until, "!window.demo.who.includes('bob') && 'gone'")

        # A second tab of ann's is no join, yet her first tab comes to show both streams.
        await in_browser(tabs.open, "ann", "", "ann, second tab")
        await in_browser(tabs.until, "window.demo.token")
        two = "document.getElementById('who').textContent === 'ann (2 tabs)'"
        await in_browser(tabs.on("ann").until, two)
    finally:
        await demo.stop()


@pytest.mark.gen_test(timeout=30)
async def test_demo_forms_refuse_bad_input_with_json_errors():
    demo = await start_demo()
    try:
        cases = [
            ("/demo/push", b"not json", 400, "INVALID_JSON"),
            ("/demo/push", b"[]", 400, "INVALID_JSON"),
            ("/demo/push", b'{"token": "x"}', 400, "INVALID_TEXT"),
            ("/demo/push", b'{"token": "x", "text": ""}', 400, "INVALID_TEXT"),
            ("/demo/push", b'{"text": "hi"}', 400, "INVALID_TARGET"),
            ("/demo/push", b'{"token": "a", "user": "b", "text": "hi"}', 400, "INVALID_TARGET"),
            ("/demo/push", b'{"user": "a b", "text": "hi"}', 400, "INVALID_TARGET"),
            ("/demo/push", b'{"token": "not-one-of-ours", "text": "hi"}', 404, "TOKEN_NOT_FOUND"),
            ("/demo/say", b'{"text": "hi"}', 400, "INVALID_NAME"),
            ("/demo/say", b'{"name": "ann", "text": "%s"}' % (b"x" * 501), 400, "INVALID_TEXT"),
        ]
        from tornado.httpclient import AsyncHTTPClient

        for path, body, status, code in cases:
            answer = await AsyncHTTPClient().fetch(
                demo.base_url + path, method="POST", body=body, raise_error=False
            )
            assert answer.code == status, (path, body, answer.body)
            assert answer.headers["Content-Type"].startswith("application/json")
            assert json.loads(answer.body)["error"]["code"] == code, (path, body)
    finally:
        await demo.stop()


@pytest.mark.gen_test(timeout=120)
async def test_screenshots_of_the_demo_and_the_dashboard_are_real_captures(tmp_path):
    demo = await start_demo()
    try:
        shots = await in_browser(take, tmp_path, demo)
    finally:
        await demo.stop()
    assert [shot.name for shot in shots] == ["demo.png", "dashboard.png"]
    for shot in shots:
        data = shot.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000, shot

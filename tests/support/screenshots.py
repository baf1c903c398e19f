"""The pictures of docs/images, taken in headless Chromium from a real ``tornado-sse demo``:
``python3 -m tests.support.screenshots [OUT_DIR]`` (default ``docs/images``) writes
``demo.png`` and ``dashboard.png``. Needs Chromium and its driver (``tests/run.py`` installs
them) and takes about half a minute.

Two tabs (ann and bob) open the demo; ann pushes an event to her own stream from the form, bob
says something to the lobby, and ann's tab, which shows both, is ``demo.png``. Then the
dashboard of the demo's internal API, after some streams have come and gone, is
``dashboard.png``. The end-to-end tests drive the demo with the same helpers
(:func:`start_demo`, :class:`DemoTabs`), and ``tests/e2e/test_demo.py`` takes both pictures
into a scratch directory, so the committed ones stay as they are.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from .browser import start_browser
from .ports import unused_port
from .process import ChildProcess, start_process

ROOT = Path(__file__).resolve().parents[2]

#: What a PNG file starts with.
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def start_demo(*args: str, env: dict[str, str] | None = None) -> ChildProcess:
    """``python -m tornado_sse demo *args`` on an unused loopback port, once it listens; the
    caller stops it (:meth:`ChildProcess.stop`)."""
    port = unused_port()
    return await start_process(
        [sys.executable, "-m", "tornado_sse", "demo", *args],
        port=port,
        env={"PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "info", **(env or {})},
        ready=lambda line: " listening " in line,
        what="the demo",
    )


def internal_url(demo: ChildProcess) -> str:
    """The demo's internal API, from its ``listening`` log line."""
    for line in demo.log:
        match = re.search(r" listening .*internal_port=(\d+)", line)
        if match:
            return "http://127.0.0.1:%s" % match.group(1)
    raise AssertionError("no internal_port in the demo's log:\n" + "\n".join(demo.log))


class DemoTabs:
    """Tabs of one browser on the demo page, each under a user name. Every call blocks (run
    them in a worker thread from an event loop that must keep serving)."""

    def __init__(self, driver: Any, base_url: str, timeout: float = 20.0) -> None:
        self.driver = driver
        self.base_url = base_url
        self.handles: dict[str, str] = {}
        driver.set_script_timeout(timeout)

    def open(self, name: str, query: str = "", tab: str | None = None) -> None:
        """Open the page as ``name`` in a new tab (the first in the current one), known as
        ``tab`` (default: ``name``) to the other calls."""
        if self.handles:
            self.driver.switch_to.new_window("tab")
        self.driver.get("%s/?name=%s%s" % (self.base_url, name, query))
        self.handles[tab or name] = self.driver.current_window_handle

    def on(self, name: str) -> DemoTabs:
        """Switch to ``name``'s tab."""
        self.driver.switch_to.window(self.handles[name])
        return self

    def close(self, name: str) -> None:
        """Close ``name``'s tab (its stream ends); the current tab is then undefined: switch."""
        self.on(name).driver.close()
        del self.handles[name]

    def until(self, check: str) -> Any:
        """Wait (at most the script timeout) until the JS expression ``check``, read after each
        change the page records (``window.demo.until``), is truthy; return its value."""
        return self.driver.execute_async_script(
            "window.demo.until(() => (%s)).then(arguments[arguments.length - 1]);" % check
        )

    def value(self, expression: str) -> Any:
        return self.driver.execute_script("return (%s);" % expression)

    def submit(self, form: str, field: str, text: str) -> None:
        """Type ``text`` into ``field`` and submit ``form``, as a person would."""
        from selenium.webdriver.common.by import By

        box = self.driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(text)
        self.driver.find_element(By.CSS_SELECTOR, "#%s button" % form).click()

    def received(self, kind: str, data: str) -> str:
        """Wait until this tab got an event ``kind`` whose data contains ``data``."""
        return self.until(
            "window.demo.events.find((e) => e.type === %r && e.data.includes(%r))" % (kind, data)
            + " && 'yes'"
        )


def demo_scene(tabs: DemoTabs) -> None:
    """Ann and Bob in two tabs, a push to Ann's own stream, a word from Bob to the lobby; ends
    on Ann's tab once it shows all of it."""
    tabs.open("ann")
    tabs.until("window.demo.token")
    tabs.open("bob")
    tabs.until("window.demo.token")
    tabs.on("bob").submit("say", "say-text", "hi Ann, Bob here")
    tabs.on("ann").received("chat", "hi Ann, Bob here")
    tabs.submit("push", "push-text", "hello from the form")
    tabs.received("note", "hello from the form")
    tabs.until("window.demo.who.includes('ann') && window.demo.who.includes('bob')")
    tabs.until("window.demo.events.filter((e) => e.type === 'tick').length >= 3")


def dashboard_scene(tabs: DemoTabs, internal: str) -> None:
    """The dashboard of the demo's internal API while tabs come and go, drawn over about 15 s.

    At most two guest tabs are open at once beside ann's and bob's: a browser holds at most
    six HTTP/1.1 connections to one host, and each tab's stream holds one."""
    driver = tabs.driver
    driver.switch_to.new_window("tab")
    driver.get(internal + "/internal/dashboard#interval=500&points=40")
    dashboard = driver.current_window_handle
    after = "window.dashboard.after(arguments[0]).then(arguments[arguments.length - 1]);"
    guests: list[str] = []
    for step in range(8):  # streams come and go between the dashboard's updates
        guests.append("guest%d" % step)
        tabs.open(guests[-1])
        tabs.until("window.demo.token")
        if len(guests) > 2:
            tabs.close(guests.pop(0))
        driver.switch_to.window(dashboard)
        driver.execute_async_script(after, 3)
    driver.execute_async_script(after, 10)


def take(out: Path, demo: ChildProcess) -> list[Path]:
    """Write ``demo.png`` and ``dashboard.png`` of the running ``demo`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    driver = start_browser()
    try:
        driver.set_window_size(1280, 1000)  # the demo page's footer fits too
        tabs = DemoTabs(driver, demo.base_url)
        demo_scene(tabs)
        shots = [out / "demo.png", out / "dashboard.png"]
        driver.save_screenshot(str(shots[0]))
        dashboard_scene(tabs, internal_url(demo))
        driver.save_screenshot(str(shots[1]))
    finally:
        driver.quit()
    for shot in shots:
        assert shot.read_bytes().startswith(PNG_MAGIC), shot
    return shots


async def _main(out: Path) -> int:
    demo = await start_demo()
    try:
        shots = await asyncio.get_running_loop().run_in_executor(None, take, out, demo)
    finally:
        await demo.stop()
    for shot in shots:
        print(shot)
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images"
    sys.exit(asyncio.run(_main(target)))

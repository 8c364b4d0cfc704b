"""Headless Chromium driven over the Chrome DevTools Protocol, for the dashboard tests (plain module).

A few dozen lines of CDP over a websocket (aiohttp, already a dependency of the server):
start Debian's ``chromium`` with ``--remote-debugging-port=0``, open one page, navigate,
evaluate JavaScript in it (the test reads the rendered DOM; the pages have none of
their own), type into forms, take screenshots.  :func:`find_chromium` gives the binary
or None (tests skip with :data:`SKIP_REASON`).
"""
import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

SKIP_REASON = ("no Chromium found (Debian: apt-get install -y chromium; or set POSFAST_CHROMIUM to a "
               "chromium / chrome binary)")


def find_chromium():
    for name in (os.environ.get("POSFAST_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class Browser:
    """One headless Chromium with one page (tab).  ``close()`` ends the process."""

    def __init__(self, binary=None, *, width=1280, height=900, timeout=30.0):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise RuntimeError(SKIP_REASON)
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="posfast-chromium-")
        args = [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--metrics-recording-only", "--password-store=basic", f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}", "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ws_url = None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                ws_url = m.group(1)
                break
        if ws_url is None:
            self.close()
            raise RuntimeError("chromium did not start: " + "".join(seen[-20:]))
        self.loop = asyncio.new_event_loop()
        self._id = 0
        self._events = []
        self.loop.run_until_complete(self._connect(ws_url))
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1, "mobile": False}, session=True)

    async def _connect(self, url):
        import aiohttp
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(url, max_msg_size=0)

    async def _call(self, method, params, session):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        await self._ws.send_str(json.dumps(msg))
        while True:
            reply = await asyncio.wait_for(self._ws.receive_json(), self.timeout)
            if reply.get("id") == msg["id"]:
                if "error" in reply:
                    raise RuntimeError(f"CDP {method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    async def _wait_event(self, name, since):
        while True:
            for ev in self._events[since:]:
                if ev["method"] == name:
                    return ev
            since = len(self._events)
            reply = await asyncio.wait_for(self._ws.receive_json(), self.timeout)
            if "method" in reply:
                self._events.append(reply)

    def call(self, method, params=None, *, session=False):
        return self.loop.run_until_complete(self._call(method, params, session))

    def goto(self, url):
        """Navigate and wait for the load event."""
        mark = len(self._events)
        self.call("Page.navigate", {"url": url}, session=True)
        self.loop.run_until_complete(self._wait_event("Page.loadEventFired", mark))

    def js(self, expression):
        """Evaluate in the page; returns the value (JSON-able) or raises on an exception."""
        got = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True}, session=True)
        if "exceptionDetails" in got:
            raise RuntimeError(f"page JS failed: {got['exceptionDetails']}")
        return got["result"].get("value")

    def submit(self, form_selector, values):
        """Fill a form's fields (name -> value) and submit it; waits for the next page's load."""
        mark = len(self._events)
        fill = ";".join(f"f.elements[{json.dumps(k)}].value = {json.dumps(v)}" for k, v in values.items())
        self.js(f"(() => {{ const f = document.querySelector({json.dumps(form_selector)}); {fill}; "
                "f.requestSubmit(); return true; })()")
        self.loop.run_until_complete(self._wait_event("Page.loadEventFired", mark))

    def text(self, selector):
        return self.js(f"(() => {{ const n = document.querySelector({json.dumps(selector)}); "
                       "return n ? n.textContent : null; })()")

    def texts(self, selector):
        return self.js(f"Array.from(document.querySelectorAll({json.dumps(selector)}), n => n.textContent)")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                         session=True)["data"]
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))
        return path

    def cookies(self):
        return self.call("Network.getAllCookies", session=True).get("cookies", [])

    def close(self):
        try:
            if getattr(self, "loop", None) is not None:
                async def shut():
                    await self._ws.close()
                    await self._http.close()
                try:
                    self.loop.run_until_complete(shut())
                except Exception:
                    pass
                self.loop.close()
                self.loop = None
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(30)
            self.proc.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)

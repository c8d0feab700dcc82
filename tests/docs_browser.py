"""Helpers of tests/test_docs.py: a static file server and headless Chromium driven over a pipe.

Chromium is Debian's ``chromium``, started with ``--remote-debugging-pipe``: DevTools protocol
messages are NUL-terminated JSON on file descriptors 3 (commands in) and 4 (replies and events
out), so no websocket client and no browser download is needed. The DevTools ``Network`` domain
reports every request a page (or its workers) makes, which is what the test asserts on.

Nothing may leave the machine even by accident: the browser's proxy is the local server, which
answers any proxied request (absolute URL or CONNECT, i.e. anything not addressed to the site
itself on the loopback interface) with 403 and records it.
"""

import fcntl
import functools
import http.server
import json
import os
import subprocess
import threading
import time
import urllib.parse

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
]


class SiteServer:
    """Serve a folder on 127.0.0.1 (free port); refuse and record anything sent to it as a proxy."""

    def __init__(self, root: str):
        refused = self.refused = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _local(self) -> bool:
                if self.path.startswith("/"):
                    return True
                refused.append(f"{self.command} {self.path}")
                self.send_error(403, "the docs test lets nothing leave the machine")
                return False

            def do_GET(self):
                if self._local():
                    super().do_GET()

            def do_HEAD(self):
                if self._local():
                    super().do_HEAD()

            def do_CONNECT(self):
                self._local()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Chromium:
    """One headless browser, one page target, DevTools protocol over a pipe."""

    def __init__(self, executable: str, user_data_dir: str, proxy: str):
        cmd_r, self._cmd_w = os.pipe()   # we write commands; the browser reads them on fd 3
        self._evt_r, evt_w = os.pipe()   # the browser writes on fd 4; we read

        def child_fds():  # runs in the child before exec: the pipe ends become fds 3 and 4
            a, b = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(evt_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", f"--proxy-server={proxy}",
             "--remote-debugging-pipe", "about:blank"],
            preexec_fn=child_fds, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(evt_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Network.enable", "Runtime.enable"):
            self.call(method, session=self.session)
        # Workers of the page (the search worker) report their own requests on child sessions.
        self.call("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
                  session=self.session)

    # ---- transport ----
    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._evt_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cv:
                    self._cv.notify_all()
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                if msg.get("method") == "Target.attachedToTarget":  # a worker: watch it, then let it run
                    child = msg["params"]["sessionId"]
                    self._post("Network.enable", session=child)
                    self._post("Runtime.runIfWaitingForDebugger", session=child)
                with self._cv:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cv.notify_all()

    def _post(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        with self._cv:
            self._next_id += 1
            msg_id = self._next_id
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        return msg_id

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        msg_id = self._post(method, params, session)
        with self._cv:
            if not self._cv.wait_for(lambda: msg_id in self._replies or self.proc.poll() is not None, timeout):
                raise TimeoutError(f"no reply to {method} in {timeout} s")
            if msg_id not in self._replies:
                raise RuntimeError(f"chromium exited ({self.proc.returncode}) during {method}")
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    # ---- pages ----
    def open(self, url: str, probe_js: str, timeout: float = 30) -> tuple[dict, list[dict]]:
        """Load url, wait for its load event and a short settle, evaluate probe_js (returns JSON).

        Returns (the probe's value, the DevTools events of this page load).
        """
        with self._cv:
            start = len(self.events)
        self.call("Page.navigate", {"url": url}, session=self.session)
        deadline = time.monotonic() + timeout
        with self._cv:
            loaded = lambda: any(e.get("method") == "Page.loadEventFired" for e in self.events[start:])
            if not self._cv.wait_for(loaded, max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{url} did not finish loading in {timeout} s")
        settle = "new Promise(r => setTimeout(r, 300)).then(() => JSON.stringify(" + probe_js + "))"
        result = self.call("Runtime.evaluate", {"expression": settle, "awaitPromise": True, "returnByValue": True},
                           session=self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"probe failed on {url}: {result['exceptionDetails']}")
        with self._cv:
            events = list(self.events[start:])
        return json.loads(result["result"]["value"]), events

    def set_viewport(self, width: int, height: int) -> None:
        """Lay pages out as in a desktop window of width × height CSS pixels."""
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=self.session)

    def screenshot(self, path: str, max_height: int = 16000) -> tuple[int, int]:
        """A PNG of the whole current page (up to max_height pixels tall); returns its (width, height)."""
        import base64

        metrics = self.call("Page.getLayoutMetrics", session=self.session)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        width, height = int(size["width"]), min(int(size["height"]), max_height)
        shot = self.call("Page.captureScreenshot",
                         {"format": "png", "captureBeyondViewport": True,
                          "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
                         session=self.session, timeout=60)
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        return width, height

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)


def request_urls(events: list[dict]) -> list[str]:
    """Every URL the page and its workers asked for."""
    return [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]


def failures(events: list[dict]) -> list[str]:
    """Failed loads, HTTP errors and uncaught script exceptions of one page load."""
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Network.loadingFailed" and not p.get("canceled"):
            out.append(f"load failed: {p.get('errorText')} (request {p.get('requestId')})")
        elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
            out.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        elif m == "Runtime.exceptionThrown":
            details = p["exceptionDetails"]
            out.append(f"script error: {details.get('exception', {}).get('description') or details.get('text')}")
    return out


def is_local(url: str, origin: str) -> bool:
    """True for the site's own origin and for URLs that fetch nothing (data:, blob:, about:)."""
    scheme = urllib.parse.urlsplit(url).scheme
    return url.startswith(origin + "/") or scheme in ("data", "blob", "about")

"""`make docs-check`: the API docs page rendered by headless Chromium with no network, refused if blank.

The app's docs routes run on a free local port (they need no database); Chromium resolves
no other host (``--host-resolver-rules``), so a script or stylesheet from a CDN would leave
the page blank. It checks the rendered DOM lists every operation, and that the screenshot
(``build/docs-check.png``) is not one uniform colour. Without Chromium it says so and
exits 0 (``apt-get install chromium`` on Debian).
"""

from __future__ import annotations

import logging
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import types
import zlib
from pathlib import Path

import httpx
import uvicorn

from service.app import create_app
from service.embedded import free_port
from service.settings import Settings

logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

OUTPUT = Path("build/docs-check.png")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``url`` with a fresh profile and only 127.0.0.1 resolvable."""
    browser = next(shutil.which(name) for name in BROWSERS if shutil.which(name))
    with tempfile.TemporaryDirectory(prefix="docs-check-") as profile:
        return subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--window-size=1280,1600", "--virtual-time-budget=15000", *extra, url],
            capture_output=True, text=True, timeout=120, check=False)


def colours(png: bytes) -> int:
    """How many distinct byte values the PNG's decompressed image data holds (a blank page has a handful)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    data, offset = b"", 8
    while offset < len(png):
        length, kind = struct.unpack(">I4s", png[offset:offset + 8])
        if kind == b"IDAT":
            data += png[offset + 8:offset + 8 + length]
        offset += 12 + length
    return len(set(zlib.decompress(data)))


def main() -> int:
    if not any(shutil.which(name) for name in BROWSERS):
        print("docs-check skipped: Chromium is not installed (Debian: apt-get install chromium)")
        return 0
    app = create_app(types.SimpleNamespace(settings=Settings()))  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        url = f"http://127.0.0.1:{port}/schema/swagger"
        document = httpx.get(f"http://127.0.0.1:{port}/schema/openapi.json").json()
        operations = sum(len(item) for item in document["paths"].values())
        dom = chromium(url, "--dump-dom").stdout
        rendered = dom.count('class="opblock-summary-path"') + dom.count("opblock-summary-path ")
        OUTPUT.parent.mkdir(exist_ok=True)
        shot = chromium(url, f"--screenshot={OUTPUT.resolve()}")
        if not OUTPUT.exists():
            print(f"docs-check failed: Chromium wrote no screenshot\n{shot.stderr[-2000:]}")
            return 1
        distinct = colours(OUTPUT.read_bytes())
    finally:
        server.should_exit = True
        thread.join(10)
    print(f"docs-check: {rendered} of {operations} operations rendered; screenshot {OUTPUT} "
          f"({distinct} distinct byte values)")
    if rendered < operations:
        print("docs-check failed: the page did not render every operation (blank, or a script did not load)")
        return 1
    if distinct < 16:
        print("docs-check failed: the screenshot is a blank page")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Headless Chromium for report tests: serve a folder on 127.0.0.1, dump the rendered DOM, screenshot."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TIMEOUT = 60


def chromium_path() -> str | None:
    return next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and os.access(p, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(folder: Path, page: str = "index.html"):
    """`python -m http.server` on a free loopback port for the duration; yields the page URL."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/{page}"
    try:
        deadline = time.time() + 15
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    assert r.status == 200
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def _base(tmp_path: Path) -> list[str]:
    # No background networking: the machine has no network and Chromium would keep trying.
    return [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--mute-audio", f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000"]


def dump_dom(url: str, tmp_path: Path) -> str:
    run = subprocess.run(_base(tmp_path) + ["--dump-dom", url], capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def screenshot(url: str, tmp_path: Path) -> Path:
    shot = tmp_path / "page.png"
    run = subprocess.run(_base(tmp_path) + [f"--screenshot={shot}", "--window-size=1200,2000", "--hide-scrollbars",
                                            url], capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-2000:]
    return shot

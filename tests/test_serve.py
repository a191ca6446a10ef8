"""`sdstudio serve` (what `make studio` runs) serves the home dashboard with Voilà on loopback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

from sdstudio.store import Store
from tests.helpers import free_port, wait_for_http


def test_serve_serves_the_home_dashboard_and_prints_its_url(home):
    store = Store.open(home)
    store.create_job("generation", use_case="code_generation", model_id="planted-model-xyz", status="done")
    store.close()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdstudio.cli", "serve", "--port", str(port), "--home", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "SDSTUDIO_HOME": ""})
    try:
        url = f"http://127.0.0.1:{port}/voila/render/00_home.ipynb"
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=90)
        page = urllib.request.urlopen(url, timeout=120).read().decode()
        assert "voila" in page  # the widgets themselves render in a browser: tests/test_browser.py
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/voila/render/00_home.ipynb" in out

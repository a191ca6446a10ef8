"""`sdstudio serve` (what `make studio` runs) serves the home dashboard with Voilà on loopback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
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


def test_the_root_url_redirects_to_the_home_page_and_every_page_stays_reachable(home):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdstudio.cli", "serve", "--port", str(port), "--home", str(home)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        wait_for_http(f"http://127.0.0.1:{port}/voila/tree", timeout=90)
        try:
            urllib.request.build_opener(NoRedirect).open(f"http://127.0.0.1:{port}/", timeout=30)
            raise AssertionError("/ did not redirect")
        except urllib.error.HTTPError as exc:
            assert exc.code == 302 and exc.headers["Location"] == "/voila/render/00_home.ipynb"
        for page in ("00_home.ipynb", "08_job.ipynb"):
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/voila/render/{page}", timeout=120).status == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

"""The sdstudio command's start-up runs with the garbage collector paused, and gets it back (startup.py)."""
from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from sdstudio import startup

ROOT = Path(__file__).resolve().parent.parent


def test_paused_collector_resumes_once_and_leaves_a_callers_own_disable_alone():
    assert gc.isenabled()
    try:
        startup.pause_collector()
        assert not gc.isenabled()
        startup.resume_collector()
        assert gc.isenabled()
        startup.resume_collector()  # nothing paused: nothing to do
        assert gc.isenabled()
        gc.disable()  # the caller's choice
        startup.pause_collector()
        startup.resume_collector()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_job_resumes_the_collector_the_command_paused(openai_server, tmp_path):
    script = ("import gc, sys\n"
              "from sdstudio import startup\n"
              "from sdstudio.cli import main\n"
              "startup.pause_collector()\n"
              "assert not gc.isenabled()\n"
              "code = main(sys.argv[1:])\n"
              "print(code, gc.isenabled(), gc.get_freeze_count() > 0)\n")
    args = ["generate", "--provider", "openai_compatible", "--model", "fake-model", "--base-url", openai_server.url,
            "--topics", "Heaps", "--per-topic", "1", "--home", str(tmp_path), "--json"]
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 True True"


def test_a_command_that_starts_no_job_gets_the_collector_back_at_the_latest_after_a_while():
    script = ("import gc, time\n"
              "from sdstudio import startup\n"
              "startup.LATEST_S = 0.2\n"
              "startup.pause_collector()\n"
              "paused = not gc.isenabled()\n"
              "time.sleep(1.0)\n"
              "print(paused, gc.isenabled())\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "True True", done.stderr

"""When the garbage collector runs: paused for the command's start-up, fewer young collections during runs."""
from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from sdstudio import collector

ROOT = Path(__file__).resolve().parent.parent


def test_paused_collector_resumes_once_and_leaves_a_callers_own_disable_alone():
    assert gc.isenabled()
    try:
        collector.pause_collector()
        assert not gc.isenabled()
        collector.resume_collector()
        assert gc.isenabled()
        collector.resume_collector()  # nothing paused: nothing to do
        assert gc.isenabled()
        gc.disable()  # the caller's choice
        collector.pause_collector()
        collector.resume_collector()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_job_resumes_the_collector_the_command_paused(openai_server, tmp_path):
    script = ("import gc, sys\n"
              "from sdstudio import collector\n"
              "from sdstudio.cli import main\n"
              "collector.pause_collector()\n"
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
              "from sdstudio import collector\n"
              "collector.LATEST_S = 0.2\n"
              "collector.pause_collector()\n"
              "paused = not gc.isenabled()\n"
              "time.sleep(1.0)\n"
              "print(paused, gc.isenabled())\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "True True", done.stderr


def test_runs_collect_the_young_generation_less_often_and_the_last_run_restores_the_setting():
    before = gc.get_threshold()
    with collector.fewer_collections():
        assert gc.get_threshold() == (collector.RUN_THRESHOLD, *before[1:])
        with collector.fewer_collections():  # a second run at the same time (another thread)
            pass
        assert gc.get_threshold()[0] == collector.RUN_THRESHOLD
    assert gc.get_threshold() == before

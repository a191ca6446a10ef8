"""Engine throughput against the fake OpenAI-compatible server (run in its own process).

Scenarios: the issue's (N=2000, concurrency 64, 100 ms latency) and the brief's (N=1280, concurrency 64,
200 ms latency). Each run is a fresh child process, so the figures include interpreter start-up,
imports and every SQLite write. Prints ideal time ceil(N/C) x latency, actual time, efficiency =
ideal/actual (goal >= 0.95), client CPU ms per request (goal <= 1 ms), peak RSS; then a re-run of the
finished job (goal: zero requests, near-zero cost).
Run: .venv/bin/python benchmarks/engine.py
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from sdstudio.config import ModelParameters, ModelSpec, RunSettings
from sdstudio.engine import Engine, WorkItem, request_key
from sdstudio.providers import ChatRequest, get_provider
from sdstudio.store import Store
url, db, n, c = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = Store(db)
job = store.create_job("generation") if len(sys.argv) < 6 else int(sys.argv[5])
provider = get_provider(ModelSpec(provider="openai_compatible", model="fake-model", base_url=url))
params = ModelParameters(max_tokens=64)
def work():
    for i in range(n):
        req = ChatRequest.of(f"question {i}", params)
        yield WorkItem(request_key("openai_compatible", "fake-model", req), req, input={"i": i})
t1 = time.perf_counter()
result = Engine(provider, store, "generation", job, RunSettings(concurrency=c)).run(work(), total=n)
t2 = time.perf_counter()
print(json.dumps({"job": job, "import_s": t1 - t0, "run_s": t2 - t1, "ok": result.progress.ok,
                  "cached": result.progress.cached}))
"""


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--latency", str(latency)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def run_child(url: str, db: str, n: int, c: int, job: int | None = None) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    args = [sys.executable, "-c", CHILD, url, db, str(n), str(c)] + ([str(job)] if job else [])
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures.update(wall_s=wall, cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                   rss_mb=after.ru_maxrss / 1024)
    return figures


def scenario(n: int, c: int, latency: float) -> None:
    server, url = start_server(latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "metadata.db")
            first = run_child(url, db, n, c)
            again = run_child(url, db, n, c, job=first["job"])
    finally:
        server.terminate()
    ideal = math.ceil(n / c) * latency
    print(f"\n== N={n} concurrency={c} latency={latency * 1000:.0f} ms")
    print(f"ideal time            {ideal:7.2f} s")
    print(f"engine run time       {first['run_s']:7.2f} s   efficiency {ideal / first['run_s']:.3f} (goal >= 0.95)")
    print(f"whole process         {first['wall_s']:7.2f} s wall, {first['cpu_s']:.2f} s CPU "
          f"(imports {first['import_s']:.2f} s)")
    print(f"client CPU / request  {first['cpu_s'] / n * 1000:7.3f} ms (whole process, incl. SQLite writes)")
    print(f"peak RSS              {first['rss_mb']:7.1f} MB")
    print(f"ok rows               {first['ok']}")
    print(f"re-run (all cached)   {again['wall_s']:7.2f} s wall, {again['cpu_s']:.2f} s CPU, "
          f"{again['cached']} cached, {again['ok']} sent")


if __name__ == "__main__":
    scenario(2000, 64, 0.1)
    scenario(1280, 64, 0.2)

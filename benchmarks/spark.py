"""The Spark executor vs the local one (issue 20): N generation requests against the fake server at 0.2 s latency,
total concurrency 256, run by `sdstudio generate` with --executor local and then --executor spark on local[2].

Each run is a child process (the fake server stays in this one, so its CPU is not counted): its wall time, Spark's
start-up (the session is made first), the job's own time, the driver's CPU (the child's own), the executors' CPU
(the JVM and its Python workers, read from the process tree at the end), and the driver's peak RSS. Prints Spark's overhead over local, with and without Spark's start-up (aim: within 15%).
Run: .venv/bin/python benchmarks/spark.py [N]   (default 20000; needs pyspark and Java)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20_000
LATENCY_S, CONCURRENCY = 0.2, 256

CHILD = """
import json, resource, sys, time
import psutil
started = time.perf_counter()
startup = 0.0
if "spark" in sys.argv:  # the session first, so the job's time is the executor's own
    from sdstudio.executors.spark_session import spark_session
    spark_session("local[2]", 0)
    startup = time.perf_counter() - started
from sdstudio.cli import main
code = main(sys.argv[1:])
wall = time.perf_counter() - started
executors = 0.0
for child in psutil.Process().children(recursive=True):  # the JVM and its Python workers, before they exit
    try:
        times = child.cpu_times()
        executors += times.user + times.system
    except psutil.Error:
        pass
self = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": code, "wall": wall, "startup": startup, "driver_cpu": self.ru_utime + self.ru_stime,
                  "executors_cpu": executors, "driver_rss_mb": self.ru_maxrss / 1024}), file=sys.stderr)
"""


def run(executor: str, server: FakeOpenAIServer, folder: Path) -> dict:
    home = folder / executor
    home.mkdir()
    topics = folder / "topics.txt"
    topics.write_text("\n".join(f"topic {n}" for n in range(N)))
    args = ["generate", "--home", str(home), "--provider", "openai_compatible", "--model", "fake-model",
            "--base-url", server.url, "--topics-file", str(topics), "--per-topic", "1", "--concurrency",
            str(CONCURRENCY), "--executor", executor, "--json"]
    if executor == "spark":
        args += ["--spark-master", "local[2]"]
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [line for line in proc.stderr.splitlines() if line.startswith('{"code"')]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{executor} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    figures = json.loads(lines[-1])
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    figures.update(ok=summary["ok"], failed=summary["failed"], job_s=summary["elapsed_s"])
    return figures


def main() -> None:
    with FakeOpenAIServer(latency=LATENCY_S, flavor="lenient") as server, tempfile.TemporaryDirectory() as folder:
        results = {executor: run(executor, server, Path(folder)) for executor in ("local", "spark")}
    print(f"{N} requests, {LATENCY_S}s latency, concurrency {CONCURRENCY}; Spark local[2]")
    print(f"{'executor':9} {'ok':>6} {'wall s':>7} {'start-up s':>10} {'job s':>7} {'driver cpu s':>12} "
          f"{'executors cpu s':>15} {'driver peak MB':>14}")
    for name, r in results.items():
        print(f"{name:9} {r['ok']:>6} {r['wall']:>7.1f} {r['startup']:>10.1f} {r['job_s']:>7.1f} {r['driver_cpu']:>12.1f} "
              f"{r['executors_cpu']:>15.1f} {r['driver_rss_mb']:>14.0f}")
    local, spark = results["local"], results["spark"]
    print(f"Spark overhead over local: {100 * (spark['wall'] / local['wall'] - 1):+.0f}% wall (Spark start-up "
          f"included), {100 * (spark['job_s'] / local['job_s'] - 1):+.0f}% of the job's own time (aim: within 15%)")


if __name__ == "__main__":
    main()

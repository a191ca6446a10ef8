"""The Spark executor vs the local one (issue 20): N generation requests against the fake server at 0.2 s latency,
total concurrency 256, run by `sdstudio generate` with --executor local and then --executor spark on local[2].

Each run is a child process (the fake server stays in this one, so its CPU is not counted): its wall time, Spark's
start-up (the session is made first), the job's own time, the driver's CPU (the child's own), the executors' CPU
(the JVM and its Python workers, read from the process tree at the end), and the driver's peak RSS. Prints Spark's overhead over local, with and without Spark's start-up (aim: within 15%).
Run: .venv/bin/python benchmarks/spark.py [N]   (default 20000; needs pyspark and Java)

``benchmarks/spark.py parquet [ROWS]``: a data-lake input. A ROWS-row Parquet (default 1,000,000; ~150 bytes a
row) read by `sdstudio workflow --input file:///.../big.parquet --limit 1000` through Spark (spark_io.py), and by the
local reader from the plain path for comparison: a dry run (the read and the plan alone), then a real run against
the fake server (1000 rows x 3 steps). For each: wall time, the Python driver's peak RSS and the JVM's (local mode:
Spark's driver and executors in one JVM) peak RSS. Aim: under 30 s and under 1 GB for the driver.
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


PARQUET_CHILD = """
import json, resource, sys, time
import psutil
started = time.perf_counter()
from sdstudio.cli import main
code = main(sys.argv[1:])
wall = time.perf_counter() - started
jvm = 0
for child in psutil.Process().children(recursive=True):  # VmHWM: the peak resident set of each child (the JVM)
    try:
        with open(f"/proc/{child.pid}/status") as status:
            jvm += next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    except (OSError, StopIteration, psutil.Error):
        pass
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"code": code, "wall": wall, "driver_rss_mb": peak, "jvm_rss_mb": jvm / 1024}), file=sys.stderr)
"""


def parquet_file(folder: Path, rows: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / "big.parquet"
    with pq.ParquetWriter(path, pa.schema([("question", pa.string()), ("answer", pa.string())])) as writer:
        for start in range(0, rows, 100_000):
            numbers = range(start, min(start + 100_000, rows))
            writer.write_table(pa.table({
                "question": [f"Question {n}: what does a binary heap of {n % 997} items cost to build, and why?"
                             for n in numbers],
                "answer": [f"Answer {n}: O(n) with bottom-up heapify; sift-down from the last parent." for n in numbers]}))
    return path


def parquet_run(source: str, server: FakeOpenAIServer, home: Path, dry: bool) -> dict:
    args = ["workflow", "--config", str(ROOT / "examples" / "workflow.yaml"), "--input", source, "--limit", "1000",
            "--home", str(home), "--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url,
            "--concurrency", "64", "--json"] + (["--dry-run"] if dry else [])
    proc = subprocess.run([sys.executable, "-c", PARQUET_CHILD, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [line for line in proc.stderr.splitlines() if line.startswith('{"code"')]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{source} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    figures = json.loads(lines[-1])
    # the JVM writes its log4j banner to stdout too: the summary is the line that is JSON
    summary = json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("{")))
    figures["rows"] = summary.get("rows") if dry else summary["ok"]
    return figures


def parquet_main(rows: int) -> None:
    with FakeOpenAIServer(flavor="lenient") as server, tempfile.TemporaryDirectory() as folder:
        path = parquet_file(Path(folder), rows)
        print(f"{rows:,}-row Parquet ({path.stat().st_size / 2**20:.0f} MB), workflow --limit 1000 (3 steps)")
        print(f"{'input':28} {'run':8} {'rows':>5} {'wall s':>7} {'driver peak MB':>14} {'JVM peak MB':>11}")
        for label, source in (("file: URI through Spark", path.as_uri()), ("local path (table_stream)", str(path))):
            for dry in (True, False):
                home = Path(folder) / f"{'spark' if source.startswith('file:') else 'local'}-{dry}"
                r = parquet_run(source, server, home, dry)
                print(f"{label:28} {'dry run' if dry else 'run':8} {r['rows'] or 0:>5} {r['wall']:>7.1f} "
                      f"{r['driver_rss_mb']:>14.0f} {r['jvm_rss_mb']:>11.0f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "parquet":
        parquet_main(int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000)
        return
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

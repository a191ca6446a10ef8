"""Bedrock batch inference (executors/batch_bedrock.py) against loopback fakes through the real boto3 clients: the
Bedrock control plane (tests/fakes/bedrock_batch.py on the fake Bedrock server) and S3 (moto in server mode)."""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager

import pytest

from sdstudio.config import ModelParameters, ModelSpec, RunSettings
from sdstudio.errors import ConfigError
from sdstudio.executors.batch_bedrock import BedrockBatch
from sdstudio.providers import ChatRequest, Completion, ProviderError, get_provider, run_sync
from tests.conftest import AWS_ACCESS_KEY
from tests.fakes.bedrock_batch import FakeBedrockBatch, s3_server
from tests.fakes.bedrock_server import FakeBedrockServer

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
BUCKET, ROLE = "sdstudio-batch-test", "arn:aws:iam::123456789012:role/BedrockBatchInference"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}

pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture(scope="module")
def s3_url():
    with s3_server() as url:
        yield url


@pytest.fixture
def s3(s3_url, aws_env, monkeypatch):
    """The S3 every client in this process (and a CLI child) reaches: moto, a fresh bucket per test."""
    import boto3
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{s3_url}/moto-api/reset", method="POST")).read()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_url)
    client = boto3.session.Session(region_name="us-east-1").client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def server():
    with FakeBedrockServer(access_key=AWS_ACCESS_KEY) as fake:
        yield fake


@pytest.fixture
def batch(server, s3, s3_url):
    return FakeBedrockBatch(server, s3_url)


@pytest.fixture
def provider(server):
    made = get_provider(ModelSpec(provider="bedrock", model=HAIKU, base_url=server.url, region="us-east-1"))
    yield made
    run_sync(made.aclose())


def settings(**kw) -> RunSettings:
    return RunSettings(**{"batch_bucket": BUCKET, "batch_prefix": "runs", "batch_role_arn": ROLE, **kw})


def requests(n: int, schema: dict | None = None) -> dict[str, ChatRequest]:
    params = ModelParameters(temperature=0.2, max_tokens=64)
    return {f"k{i:04d}": ChatRequest.of([{"role": "system", "content": "You are terse."},
                                         {"role": "user", "content": f"topic number {i}"}], params, schema)
            for i in range(n)}


def submit(backend: BedrockBatch, asked: dict[str, ChatRequest], job_id: int = 7, part: int = 1) -> str:
    return backend.submit([backend.line(k, r) for k, r in asked.items()], job_id=job_id, part=part)


def until_final(backend: BedrockBatch, arn: str) -> list[str]:
    states = []
    while not states or states[-1] not in ("completed", "failed", "expired", "cancelled"):
        states.append(backend.poll(arn).state)
        assert len(states) < 20
    return states


def test_submit_uploads_converse_records_and_creates_one_job(provider, batch, s3):
    backend = BedrockBatch(provider, settings())
    asked = requests(120)
    arn = submit(backend, asked)
    assert arn.startswith("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/")
    lines = s3.get_object(Bucket=BUCKET, Key="runs/job-7/part-1/input.jsonl")["Body"].read().decode().splitlines()
    first = json.loads(lines[0])
    expected = provider.converse_arguments(asked["k0000"])
    expected.pop("modelId")
    assert len(lines) == 120 and first == {"recordId": "k0000", "modelInput": expected}
    [job] = batch.jobs.values()
    assert job.request["modelId"] == HAIKU and job.request["roleArn"] == ROLE
    assert job.request["modelInvocationType"] == "Converse" and job.request["timeoutDurationInHours"] == 24
    assert job.request["inputDataConfig"]["s3InputDataConfig"]["s3Uri"] == f"s3://{BUCKET}/runs/job-7/part-1/input.jsonl"
    assert job.request["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"] == f"s3://{BUCKET}/runs/job-7/part-1/output/"
    assert [r["operation"] for r in batch.server.requests] == ["CreateModelInvocationJob"]


def test_a_repeated_submit_of_the_same_part_creates_no_second_job(provider, batch):
    backend = BedrockBatch(provider, settings())
    asked = requests(100)
    assert submit(backend, asked) == submit(backend, asked)
    assert len(batch.created) == 1


def test_states_then_results_equal_the_on_demand_replies(provider, batch, server):
    backend = BedrockBatch(provider, settings())
    asked = requests(100)
    arn = submit(backend, asked)
    assert until_final(backend, arn) == ["validating", "in_progress", "in_progress", "completed"]
    state = backend.poll(arn)
    assert (state.total, state.completed, state.failed, state.error) == (100, 100, 0, None)
    assert state.files["output"] == f"s3://{BUCKET}/runs/job-7/part-1/output/"
    results = dict(backend.results(arn))
    assert sorted(results) == sorted(asked)
    for key in ("k0000", "k0042", "k0099"):
        on_demand = run_sync(provider.complete(asked[key]))
        got = results[key]
        assert isinstance(got, Completion)
        assert (got.text, got.usage, got.finish_reason) == (on_demand.text, on_demand.usage, on_demand.finish_reason)
    assert results["k0042"].text == "echo: topic number 42"


def test_schema_requests_ask_in_the_prompt_and_parse_as_on_demand(provider, batch):
    backend = BedrockBatch(provider, settings())
    asked = requests(100, SCHEMA)
    line = backend.line("k0001", asked["k0001"])
    assert "toolConfig" not in line["modelInput"] and "JSON schema" in line["modelInput"]["system"][0]["text"]
    arn = submit(backend, asked)
    until_final(backend, arn)
    results = dict(backend.results(arn))
    on_demand = run_sync(provider.complete(asked["k0001"]))  # the tool dialect on demand: the same JSON
    assert provider.parse_json(results["k0001"].text, asked["k0001"]) == on_demand.parsed == {
        "answer": "topic number 1"}


def test_a_partially_completed_job_gives_each_failed_record_its_error(provider, batch):
    backend = BedrockBatch(provider, settings())
    batch.plan(errors=3)
    batch.plan(errors=2, error_code=429, error_message="Too many requests")
    first, second = submit(backend, requests(100)), submit(backend, requests(100), part=2)
    until_final(backend, first), until_final(backend, second)
    assert batch.job(first).status == "PartiallyCompleted"
    state = backend.poll(first)
    assert (state.state, state.completed, state.failed) == ("completed", 97, 3)
    errors = {k: v for k, v in backend.results(first) if isinstance(v, ProviderError)}
    assert sorted(errors) == ["k0000", "k0001", "k0002"]
    assert {e.kind for e in errors.values()} == {"bad_request"} and "Malformed input request" in str(errors["k0000"])
    throttled = [v for _, v in backend.results(second) if isinstance(v, ProviderError)]
    assert [e.kind for e in throttled] == ["rate_limited", "rate_limited"] and all(e.retryable for e in throttled)


def test_an_expired_job_gives_the_records_it_answered(provider, batch):
    backend = BedrockBatch(provider, settings())
    batch.plan(end="Expired", answered=40)
    arn = submit(backend, requests(100))
    assert until_final(backend, arn)[-1] == "expired"
    assert "timeout" in backend.poll(arn).error
    assert sorted(k for k, _ in backend.results(arn)) == [f"k{i:04d}" for i in range(40)]


def test_a_failed_job_says_why_and_has_no_results(provider, batch):
    backend = BedrockBatch(provider, settings())
    batch.plan(end="Failed", message="The role cannot read s3://sdstudio-batch-test/runs")
    arn = submit(backend, requests(100))
    assert until_final(backend, arn)[-1] == "failed"
    assert backend.poll(arn).error == "Failed: The role cannot read s3://sdstudio-batch-test/runs"
    assert list(backend.results(arn)) == []


def test_stop_cancels_and_keeps_what_was_answered(provider, batch):
    backend = BedrockBatch(provider, settings())
    batch.plan(answered=10)
    arn = submit(backend, requests(100))
    assert backend.poll(arn).state == "validating"
    backend.cancel(arn)
    assert [r["operation"] for r in batch.server.requests][-1] == "StopModelInvocationJob"
    assert batch.job(arn).status == "Stopping" and backend.poll(arn).state == "cancelled"
    assert len(list(backend.results(arn))) == 10
    backend.cancel(arn)  # an ended job: nothing to stop, no error
    backend.close()
    assert backend.poll(arn).state == "cancelled" and len(list(backend.results(arn))) == 10  # S3 opened again


def test_malformed_output_lines_fail_their_record_and_a_line_without_one_is_skipped(provider, batch, caplog):
    backend = BedrockBatch(provider, settings())
    batch.plan(malformed=2, garbage=1)
    arn = submit(backend, requests(100))
    until_final(backend, arn)
    with caplog.at_level(logging.WARNING, logger="sdstudio.executors.batch_bedrock"):
        results = list(backend.results(arn))
    bad = {k: v for k, v in results if isinstance(v, ProviderError)}
    assert sorted(bad) == ["k0000", "k0001"] and {e.kind for e in bad.values()} == {"bad_request"}
    assert "malformed line" in str(bad["k0000"])
    assert len(results) == 100 and any("names no recordId" in r.getMessage() for r in caplog.records)


def test_parts_outside_the_quotas_and_missing_settings_are_refused_at_once(provider, batch, s3):
    backend = BedrockBatch(provider, settings())
    with pytest.raises(ProviderError, match="100 to 50000 records"):
        submit(backend, requests(99))
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET) and batch.created == []
    with pytest.raises(ConfigError, match="batch_bucket and batch_role_arn"):
        BedrockBatch(provider, RunSettings())


def test_a_job_below_the_minimum_fails_at_validation_in_the_fake(provider, batch):
    """The fake holds Bedrock's quota too: a client that sent fewer records learns it from the job's status."""
    backend = BedrockBatch(provider, settings())
    backend.min_requests = 1
    arn = submit(backend, requests(5))
    state = backend.poll(arn)
    assert state.state == "failed" and "minimum number of records" in state.error


# -- through the batch executor: `sdstudio generate --executor batch` with provider bedrock ---------------------------

TOPICS = [f"Topic number {i:04d}" for i in range(2000)]


def cli(home, server, topics: int, *extra: str) -> list[str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "topics.txt").write_text("\n".join(TOPICS[:topics]) + "\n")
    return ["generate", "--provider", "bedrock", "--model", HAIKU, "--base-url", server.url, "--region", "us-east-1",
            "--topics-file", str(home / "topics.txt"), "--per-topic", "1", "--concurrency", "8", "--home", str(home),
            *extra]


BATCH = ("--executor", "batch", "--batch-bucket", BUCKET, "--batch-prefix", "runs", "--batch-role-arn", ROLE,
         "--batch-poll-s", "0.02")


def records(home) -> list[dict]:
    from sdstudio.store import Store

    return sorted(Store.open(home).records("generation", 1), key=lambda r: r["item_key"])


def same(rows: list[dict]) -> list[tuple]:
    """What a record says, apart from tokens in (the schema in the prompt counts) and cost (the batch price)."""
    return [(r["item_key"], r["status"], json.dumps(r["output"], sort_keys=True), r["tokens_out"]) for r in rows]


def input_record_ids(s3, job) -> list[str]:
    uri = job.request["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return [json.loads(x)["recordId"] for x in s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()]


def test_a_generation_through_batch_gives_the_on_demand_records_at_the_batch_price(tmp_path, server, batch):
    from sdstudio.cli import main
    from sdstudio.pricing import price_for

    assert main(cli(tmp_path / "local", server, 120)) == 0
    on_demand_calls = len(server.converse_requests())
    assert main(cli(tmp_path / "batch", server, 120, *BATCH)) == 0
    local, batched = records(tmp_path / "local"), records(tmp_path / "batch")
    assert len(local) == 120 and same(batched) == same(local)
    assert len(batch.created) == 1 and len(server.converse_requests()) == on_demand_calls + 1  # the dialect probe
    [job] = batch.jobs.values()
    price = price_for(HAIKU)
    in_batch = [r for r in batched if r["request_key"] in set(input_record_ids(batch.s3, job))]
    assert len(in_batch) == 119
    for row in in_batch[:5]:
        assert row["cost_usd"] == pytest.approx(price.cost(row["tokens_in"], row["tokens_out"]) / 2)


def test_two_thousand_items_in_one_bedrock_job_all_accounted_for_at_the_batch_price(tmp_path, server, batch):
    from sdstudio.cli import main
    from sdstudio.pricing import price_for

    assert main(cli(tmp_path, server, 2000, *BATCH, "--json")) == 0
    rows = records(tmp_path)
    assert len(rows) == 2000 and {r["status"] for r in rows} == {"ok"}
    assert len(batch.created) == 1 and len(input_record_ids(batch.s3, batch.jobs[batch.created[0]])) == 1999
    price = price_for(HAIKU)
    batched = sum(r["cost_usd"] for r in rows)
    on_demand = sum(price.cost(r["tokens_in"], r["tokens_out"]) for r in rows)
    assert on_demand / 2 <= batched < on_demand / 2 + price.cost(2000, 2000)  # half, but for the one probe


@contextmanager
def submitted_in_background(home, server, batch):
    """``sdstudio generate`` of 110 items through Bedrock batch in a process of its own, held at its submitted job:
    the block starts once the job's remote id is saved; the process is killed after it, if still running."""
    import os
    import subprocess
    import sys
    import time

    from sdstudio.store import Store

    batch.hold = True
    proc = subprocess.Popen([sys.executable, "-m", "sdstudio.cli", *cli(home, server, 110, *BATCH), "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 90
        while not any(row["remote_id"] for row in (Store.open(home).job_batches(1) if (home / "metadata.db").exists()
                                                   else [])):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield proc
    finally:
        proc.kill()
        proc.wait(30)


def test_a_killed_run_resumes_its_submitted_job_without_submitting_again(tmp_path, server, batch):
    from sdstudio.cli import main

    home = tmp_path / "home"
    with submitted_in_background(home, server, batch):
        pass  # killed once its job is submitted
    assert len(batch.created) == 1
    batch.hold = False
    assert main(cli(home, server, 110, *BATCH, "--resume", "1")) == 0
    assert len(batch.created) == 1
    assert {r["status"] for r in records(home)} == {"ok"} and len(records(home)) == 110


def test_failed_lines_fail_for_good_or_are_asked_again_on_demand(tmp_path, server, batch):
    from sdstudio.cli import main

    batch.plan(errors=3)  # 400: the request itself is refused; asking again cannot help
    assert main(cli(tmp_path / "a", server, 110, *BATCH)) == 0
    failed = [r for r in records(tmp_path / "a") if r["status"] == "failed"]
    assert len(failed) == 3 and all("Malformed input request" in (r["error"] or "") for r in failed)
    before = len(server.converse_requests())
    batch.plan(errors=4, error_code=500, error_message="Internal server error")
    # another home's job 1 under the same prefix would be the same files and the same job (idempotent submit)
    assert main(cli(tmp_path / "b", server, 110, *BATCH, "--batch-prefix", "other-home")) == 0
    assert {r["status"] for r in records(tmp_path / "b")} == {"ok"}
    assert len(server.converse_requests()) - before == 1 + 4  # the probe, then the four lines on demand


def test_an_expired_job_submits_again_only_what_it_left_unanswered(tmp_path, server, batch):
    from sdstudio.cli import main

    batch.plan(end="Expired", answered=100)
    assert main(cli(tmp_path, server, 221, *BATCH)) == 0
    first, second = (batch.jobs[i] for i in batch.created)
    asked_first = input_record_ids(batch.s3, first)
    assert first.status == "Expired" and second.status == "Completed" and len(asked_first) == 220
    assert input_record_ids(batch.s3, second) == asked_first[100:]
    assert len(records(tmp_path)) == 221 and {r["status"] for r in records(tmp_path)} == {"ok"}


def test_a_malformed_result_line_fails_only_its_item(tmp_path, server, batch):
    from sdstudio.cli import main

    batch.plan(malformed=1)
    assert main(cli(tmp_path, server, 110, *BATCH)) == 0
    failed = [r for r in records(tmp_path) if r["status"] == "failed"]
    assert len(failed) == 1 and "malformed line" in failed[0]["error"]
    assert sum(r["status"] == "ok" for r in records(tmp_path)) == 109


def test_jobs_cancel_stops_the_running_bedrock_job(tmp_path, server, batch, capsys):
    from sdstudio.cli import main
    from sdstudio.store import Store

    home = tmp_path / "home"
    with submitted_in_background(home, server, batch) as proc:
        assert main(["jobs", "cancel", "1", "--home", str(home), "--json"]) == 0
        [job] = batch.jobs.values()
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cancelled"] == [job.arn]
        proc.wait(60)
    assert job.status == "Stopped" and "StopModelInvocationJob" in [r["operation"] for r in server.requests]
    [row] = Store.open(home).job_batches(1)
    assert row["state"] == "cancelled"


def test_what_is_below_bedrocks_minimum_of_100_records_goes_on_demand_instead_of_stopping_the_run(tmp_path, server,
                                                                                                 batch):
    """An expired job that leaves 50 unanswered, and a job of 30: no batch job under 100 records is ever created;
    those requests are asked on demand and the run finishes with every item ok."""
    from sdstudio.cli import main

    batch.plan(end="Expired", answered=120)
    before = len(server.converse_requests())
    assert main(cli(tmp_path / "expired", server, 171, *BATCH)) == 0
    assert len(batch.created) == 1  # the 50 left over were too few for a second job
    assert len(server.converse_requests()) - before == 1 + 50  # the dialect probe, then the 50 on demand
    assert len(records(tmp_path / "expired")) == 171 and {r["status"] for r in records(tmp_path / "expired")} == {"ok"}

    assert main(cli(tmp_path / "small", server, 30, *BATCH)) == 0
    assert len(batch.created) == 1 and {r["status"] for r in records(tmp_path / "small")} == {"ok"}

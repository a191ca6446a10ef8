"""Bedrock batch inference for the fake Bedrock server, with S3 from moto in server mode, both on 127.0.0.1.

``FakeBedrockBatch(server, s3_url)`` plugs into a ``FakeBedrockServer`` (``server.batch``) and serves, through
the real boto3 ``bedrock`` client, the routes of botocore's service model ``bedrock/2023-04-20``:
``POST /model-invocation-job`` (CreateModelInvocationJob), ``GET /model-invocation-job/{jobIdentifier}``
(GetModelInvocationJob) and ``POST /model-invocation-job/{jobIdentifier}/stop`` (StopModelInvocationJob).

A job reads its JSONL input from S3 and, when it ends, writes ``<input name>.out`` and ``manifest.json.out``
under ``<output s3Uri><job id>/`` as Bedrock does; each line is ``{"recordId", "modelInput", "modelOutput"}``
(``modelOutput``: the Converse response the on-demand fake gives for the same body, bedrock_server.
converse_response) or ``{"recordId", "modelInput", "error": {"errorCode", "errorMessage"}}``.

Each GetModelInvocationJob moves a job one status on: Submitted -> Validating -> Scheduled -> InProgress ->
the plan's end (Completed, or PartiallyCompleted when some record failed; Failed; Expired). What the next job
does is a ``JobPlan`` queued with ``batch.plan(...)``: records that fail, records answered before it expired,
lines written malformed, a line with no record at all. StopModelInvocationJob: Stopping, then Stopped with the
records answered so far. Jobs with fewer records than ``min_records`` (Bedrock's quota, 100 by default) fail at
validation; records of a Converse job that carry ``toolConfig`` fail with a 400, as Bedrock's do.
Idempotency: a repeated ``clientRequestToken`` answers the job it made.
"""
from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.bedrock_server import FakeBedrockServer, converse_response

ACCOUNT, REGION = "123456789012", "us-east-1"
STEPS = ("Validating", "Scheduled", "InProgress")
TERMINAL = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"})


@dataclass
class JobPlan:
    """What one job does. ``end``: Completed | Failed | Expired. ``errors``: the first N records fail (a 400
    line, or ``error_code``); ``answered``: how many records an Expired (or stopped) job answered before it
    ended (None: half); ``malformed``: N answered lines written cut off mid-JSON (their recordId still
    readable); ``garbage``: N extra lines that are no JSON record at all."""

    end: str = "Completed"
    errors: int = 0
    error_code: int = 400
    error_message: str = "Malformed input request, please reformat your input and try again."
    answered: int | None = None
    malformed: int = 0
    garbage: int = 0
    message: str = "Internal error while processing the batch job."
    steps: tuple[str, ...] = STEPS


@dataclass
class Job:
    job_id: str
    request: dict[str, Any]
    plan: JobPlan
    status: str = "Submitted"
    step: int = 0
    message: str | None = None
    submitted: float = field(default_factory=time.time)
    ended: float | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def arn(self) -> str:
        return f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-invocation-job/{self.job_id}"


class FakeBedrockBatch:
    OPERATIONS = frozenset({"CreateModelInvocationJob", "GetModelInvocationJob", "StopModelInvocationJob"})

    def __init__(self, server: FakeBedrockServer, s3_url: str, *, min_records: int = 100):
        import boto3

        self.server = server
        self.min_records = min_records
        self.jobs: dict[str, Job] = {}
        self.created: list[str] = []  # the job id of every job created (a repeated token adds none)
        self.plans: deque[JobPlan] = deque()
        self.hold = False  # while True, a running job stays InProgress (a test kills or cancels its client meanwhile)
        self._lock = threading.Lock()
        self.s3 = boto3.session.Session(aws_access_key_id="fake", aws_secret_access_key="fake",
                                        region_name=REGION).client("s3", endpoint_url=s3_url)
        server.batch = self

    def plan(self, **kw: Any) -> JobPlan:
        """The next job created follows this plan (jobs beyond the queued plans: a plain Completed one)."""
        plan = JobPlan(**kw)
        self.plans.append(plan)
        return plan

    def job(self, ref: str) -> Job:
        return self.jobs[ref.rsplit("/", 1)[-1]]

    # -- routing (called by bedrock_server._Handler) ------------------------------------------------
    def operation(self, method: str, parts: list[str]) -> str | None:
        if method == "POST" and len(parts) == 2:
            return "CreateModelInvocationJob"
        if method == "GET" and len(parts) == 3:
            return "GetModelInvocationJob"
        if method == "POST" and len(parts) == 4 and parts[3] == "stop":
            return "StopModelInvocationJob"
        return None

    def handle(self, operation: str, parts: list[str], body: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
        """(status, payload, error code or "") for one control-plane request."""
        with self._lock:
            if operation == "CreateModelInvocationJob":
                return self._create(body)
            ref = urllib.parse.unquote(parts[2]).rsplit("/", 1)[-1]
            job = self.jobs.get(ref)
            if job is None:
                return 404, {"message": f"Could not find model invocation job {ref}"}, "ResourceNotFoundException"
            if operation == "StopModelInvocationJob":
                if job.status in TERMINAL:
                    return 400, {"message": f"Job with status {job.status} cannot be stopped."}, \
                        "ValidationException"
                job.status = "Stopping"
                return 200, {}, ""
            self._advance(job)
            return 200, self._describe(job), ""

    # -- the job's life ----------------------------------------------------------------------------
    def _create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
        token = body.get("clientRequestToken")
        for job in self.jobs.values():
            if token and job.request.get("clientRequestToken") == token:
                return 200, {"jobArn": job.arn}, ""
        missing = [k for k in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig") if k not in body]
        if missing:
            return 400, {"message": f"missing {', '.join(missing)}"}, "ValidationException"
        if any(job.request["jobName"] == body["jobName"] for job in self.jobs.values()):
            return 400, {"message": f"A job with the name {body['jobName']} already exists."}, "ConflictException"
        job = Job(secrets.token_hex(6), body, self.plans.popleft() if self.plans else JobPlan())
        self.jobs[job.job_id] = job
        self.created.append(job.job_id)
        return 200, {"jobArn": job.arn}, ""

    def _advance(self, job: Job) -> None:
        if job.status in TERMINAL:
            return
        if job.status == "Stopping":
            return self._end(job, "Stopped", job.plan.answered or 0)
        if job.status == "Submitted":
            records, problem = self._read_input(job)
            if problem:
                job.status, job.message, job.ended = "Failed", problem, time.time()
                return None
            job.counts["totalRecordCount"] = len(records)
        if job.step < len(job.plan.steps):
            job.status = job.plan.steps[job.step]
            job.step += 1
            return None
        if self.hold:
            job.status = "InProgress"
            return None
        if job.plan.end == "Failed":
            job.status, job.message, job.ended = "Failed", job.plan.message, time.time()
            return None
        total = job.counts["totalRecordCount"]
        answered = total if job.plan.end == "Completed" else (
            total // 2 if job.plan.answered is None else job.plan.answered)
        return self._end(job, job.plan.end, answered)

    def _read_input(self, job: Job) -> tuple[list[dict[str, Any]], str | None]:
        uri = job.request["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        except Exception as exc:  # noqa: BLE001 - the job fails as Bedrock's does, with the reason
            return [], f"Unable to read the input {uri}: {exc}"
        try:
            records = [json.loads(line) for line in data.splitlines() if line.strip()]
        except json.JSONDecodeError:
            return [], f"The input {uri} is not valid JSONL."
        if len(records) < self.min_records:
            return [], (f"Number of records in the job ({len(records)}) is less than the minimum number of records "
                        f"per batch inference job ({self.min_records}).")
        return records, None

    def _end(self, job: Job, status: str, answered: int) -> None:
        """Write the output file with the first ``answered`` records (and the plan's faults) and end the job."""
        plan = job.plan
        records, _ = self._read_input(job)
        lines, ok, errors = [], 0, 0
        for index, record in enumerate(records[:answered]):
            model_input = record.get("modelInput") or {}
            line: dict[str, Any] = {"recordId": record.get("recordId"), "modelInput": model_input}
            if index < plan.errors:
                line["error"] = {"errorCode": plan.error_code, "errorMessage": plan.error_message}
            elif "toolConfig" in model_input or not model_input.get("messages"):
                line["error"] = {"errorCode": 400, "errorMessage": "Malformed input request: toolConfig is not "
                                                                   "supported for Converse batch inference jobs."}
            else:
                line["modelOutput"] = converse_response(self.server, model_input)
            errors, ok = errors + ("error" in line), ok + ("error" not in line)
            text = json.dumps(line)
            if "modelOutput" in line and index - plan.errors < plan.malformed:
                text = text[: len(text) // 2]  # cut off mid-record, the recordId still at its start
            lines.append(text)
        lines += ["}{ not a record" for _ in range(plan.garbage)]
        if status == "Completed" and errors:
            status = "PartiallyCompleted"
        uri = job.request["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        folder = f"{prefix.rstrip('/')}/{job.job_id}/".lstrip("/")
        name = job.request["inputDataConfig"]["s3InputDataConfig"]["s3Uri"].rsplit("/", 1)[-1]
        self.s3.put_object(Bucket=bucket, Key=f"{folder}{name}.out", Body="".join(f"{x}\n" for x in lines).encode())
        job.counts.update(processedRecordCount=ok + errors, successRecordCount=ok, errorRecordCount=errors)
        self.s3.put_object(Bucket=bucket, Key=f"{folder}manifest.json.out", Body=json.dumps(job.counts).encode())
        job.status, job.ended = status, time.time()
        if status == "Expired":
            job.message = "The job did not finish within its timeout duration."

    def _describe(self, job: Job) -> dict[str, Any]:
        request = job.request
        out = {"jobArn": job.arn, "jobName": request["jobName"], "modelId": request["modelId"],
               "roleArn": request["roleArn"], "status": job.status, "submitTime": _iso(job.submitted),
               "lastModifiedTime": _iso(time.time()), "inputDataConfig": request["inputDataConfig"],
               "outputDataConfig": request["outputDataConfig"],
               "timeoutDurationInHours": request.get("timeoutDurationInHours", 24),
               "jobExpirationTime": _iso(job.submitted + 3600 * request.get("timeoutDurationInHours", 24)),
               **job.counts}
        for name in ("clientRequestToken", "modelInvocationType"):
            if name in request:
                out[name] = request[name]
        if job.message:
            out["message"] = job.message
        if job.ended:
            out["endTime"] = _iso(job.ended)
        return out


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 in server mode on 127.0.0.1 (an ephemeral port); yields its URL (``AWS_ENDPOINT_URL_S3``)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on the test output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()

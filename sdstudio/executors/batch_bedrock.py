"""Bedrock batch inference (``CreateModelInvocationJob``): the BatchBackend of provider ``bedrock``.

A part of a job travels like this: its requests, one JSONL line each (``{"recordId": item key, "modelInput":
...}``), go to ``s3://{batch_bucket}/{batch_prefix}/job-{id}/part-{n}/input.jsonl``; the control-plane client
(``bedrock``, not ``bedrock-runtime``) creates a model invocation job that reads them as the IAM role
``batch_role_arn`` and writes ``input.jsonl.out`` (plus ``manifest.json.out``) under ``.../part-{n}/output/``
(Bedrock adds a folder named after its job id); every output line carries the recordId and either
``modelOutput`` or ``error``. ``GetModelInvocationJob`` says how far the job is, ``StopModelInvocationJob``
cancels it.

Why the job is of type Converse (``modelInvocationType``): ``modelInput`` is then the body of a Converse request
and ``modelOutput`` that of its response, so the batch line is the on-demand path's own request
(``BedrockProvider.converse_arguments`` less ``modelId``) and the reply is parsed by the same
``BedrockProvider.completion_from``: the same text, usage and parse for every Bedrock model, with no body per
model family. Converse jobs take no ``toolConfig`` (Bedrock fails such records with a 400), so a schema goes in
the prompt (the "prompt" dialect, the on-demand fallback's own system text).

Quotas (Amazon Bedrock service quotas, their defaults when this was written; they are per model and an account
may have others, see Service Quotas > Amazon Bedrock > "batch inference"):
  - Minimum number of records per batch inference job: 100 (``min_requests``; the executor asks a smaller part on
    demand, and this backend refuses one at once instead of failing a day later);
  - Records per batch inference job and records per input file: 50,000 (``max_requests``; one file per job);
  - Batch inference input file size: 1 GB (``max_bytes``; the job size quota, 5 GB, is never reached with one
    file per job);
  - timeoutDurationInHours: 24 to 168 (the service model's bounds); 24 is asked (``completion_window_s``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

from ..config import RunSettings
from ..errors import ConfigError
from ..providers.base import ChatRequest, Completion, ProviderError
from ..providers.bedrock import BedrockProvider, _kind_for
from .batch import BatchState

log = logging.getLogger("sdstudio.executors.batch_bedrock")

# GetModelInvocationJob's status -> the shared states of executors/batch.py
STATES: dict[str, str] = {
    "Submitted": "validating", "Validating": "validating",
    "Scheduled": "in_progress", "InProgress": "in_progress",
    "Completed": "completed", "PartiallyCompleted": "completed",  # per-record errors are in the .out lines
    "Failed": "failed", "Stopping": "cancelling", "Stopped": "cancelled", "Expired": "expired",
}
TERMINAL = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"})
DEFAULT_PREFIX = "sdstudio-batch"
_NO_SCHEMA = ChatRequest(())  # results() sees no request: the text is parsed where the request is known
_RECORD_ID = re.compile(r'"recordId"\s*:\s*"([^"\\]+)"')


class BedrockBatch:
    """``BedrockBatch(provider, settings)``: the S3 files and model invocation jobs of one job's parts."""

    name = "bedrock"
    min_requests = 100
    max_requests = 50_000
    max_bytes = 1_000_000_000
    completion_window_s = 24 * 3600.0

    def __init__(self, provider: BedrockProvider, settings: RunSettings):
        missing = [name for name in ("batch_bucket", "batch_role_arn") if not getattr(settings, name, None)]
        if missing:
            raise ConfigError(f"Bedrock batch inference needs {' and '.join(missing)} (run settings: the S3 bucket "
                              "its files go to, the IAM role Bedrock reads and writes them as; README 'Bedrock "
                              "batch inference')")
        if getattr(provider.spec, "structured_output", "auto") not in ("auto", "prompt"):
            raise ConfigError("Bedrock batch jobs take no toolConfig: set structured_output to auto or prompt "
                              "for the batch executor")
        self.provider = provider
        self.bucket = str(settings.batch_bucket)
        self.prefix = (settings.batch_prefix if settings.batch_prefix is not None else DEFAULT_PREFIX).strip("/")
        self.role_arn = str(settings.batch_role_arn)
        self._s3: Any = None
        self._lock = threading.Lock()

    # -- the JSONL line ------------------------------------------------------------------------------
    def line(self, key: str, request: ChatRequest) -> dict[str, Any]:
        """One record: the Converse body the on-demand path would send (schema in the prompt, see above)."""
        dialect = "prompt" if request.json_schema is not None else None
        body = self.provider.converse_arguments(request, dialect)
        body.pop("modelId")  # the job names the model
        return {"recordId": key, "modelInput": body}

    # -- submit, poll, read, cancel -----------------------------------------------------------------
    def submit(self, lines: list[dict[str, Any]], *, job_id: int, part: int) -> str:
        """Upload the part's file and create its job; return the job ARN (the batch id metadata.db keeps).

        The job name and clientRequestToken are a digest of what is asked, so a process killed between the
        create call and the stored id creates no second job when it asks again: Bedrock answers a repeated token
        with the job it already made."""
        if not self.min_requests <= len(lines) <= self.max_requests:
            raise self.provider.error("bad_request", f"a Bedrock batch job takes {self.min_requests} to "
                                      f"{self.max_requests} records (service quotas); this part has {len(lines)}: "
                                      "ask fewer on demand (--executor local, with --resume ID to finish a job)")
        data = "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n" for line in lines).encode()
        if len(data) > self.max_bytes:
            raise self.provider.error("bad_request", f"a Bedrock batch input file takes at most {self.max_bytes} "
                                      f"bytes; this part has {len(data)}")
        folder = "/".join(p for p in (self.prefix, f"job-{job_id}", f"part-{part}") if p)
        input_uri, output_uri = f"s3://{self.bucket}/{folder}/input.jsonl", f"s3://{self.bucket}/{folder}/output/"
        digest = hashlib.sha256(b"\n".join([self.provider.model.encode(), output_uri.encode(), data])).hexdigest()
        name = f"sdstudio-job{job_id}-part{part}-{digest[:12]}"
        self._s3_call("put_object", Bucket=self.bucket, Key=f"{folder}/input.jsonl", Body=data,
                      ContentType="application/jsonl")
        created = self._bedrock("create_model_invocation_job", jobName=name, clientRequestToken=name,
                                roleArn=self.role_arn, modelId=self.provider.model, modelInvocationType="Converse",
                                inputDataConfig={"s3InputDataConfig": {"s3Uri": input_uri, "s3InputFormat": "JSONL"}},
                                outputDataConfig={"s3OutputDataConfig": {"s3Uri": output_uri}},
                                timeoutDurationInHours=int(self.completion_window_s // 3600))
        return str(created["jobArn"])

    def poll(self, batch_id: str) -> BatchState:
        job = self._bedrock("get_model_invocation_job", jobIdentifier=batch_id)
        status = str(job.get("status") or "Submitted")
        message = job.get("message") or None
        files = {"input": job.get("inputDataConfig", {}).get("s3InputDataConfig", {}).get("s3Uri"),
                 "output": job.get("outputDataConfig", {}).get("s3OutputDataConfig", {}).get("s3Uri")}
        return BatchState(state=STATES.get(status, "in_progress"), total=int(job.get("totalRecordCount") or 0),
                          completed=int(job.get("successRecordCount") or 0),
                          failed=int(job.get("errorRecordCount") or 0),
                          error=f"{status}: {message}" if message else None, files=files)

    def results(self, batch_id: str) -> Iterator[tuple[str, Completion | ProviderError]]:
        """Each answered record of the job, read from its output prefix (also of a stopped or expired job: the
        lines it wrote); a record that failed gives its error, a line that is no record gives bad_request."""
        job = self._bedrock("get_model_invocation_job", jobIdentifier=batch_id)
        bucket, prefix = _split_s3(job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"])
        keys: list[str] = []
        token: str | None = None
        while True:
            page = self._s3_call("list_objects_v2", Bucket=bucket, Prefix=prefix,
                                 **({"ContinuationToken": token} if token else {}))
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl.out")]
            token = page.get("NextContinuationToken")
            if not token:
                break
        for key in sorted(keys):
            body = self._s3_call("get_object", Bucket=bucket, Key=key)["Body"]
            for raw in body.iter_lines():
                if raw.strip():
                    yield from self._record(raw.decode("utf-8", "replace"), key)

    def cancel(self, batch_id: str) -> None:
        """Stop the job; one that already ended (or is stopping) is left as it is."""
        try:
            self._bedrock("stop_model_invocation_job", jobIdentifier=batch_id)
        except ProviderError:
            job = self._bedrock("get_model_invocation_job", jobIdentifier=batch_id)
            if job.get("status") not in TERMINAL | {"Stopping"}:
                raise

    def close(self) -> None:
        """Close the S3 client (the Bedrock one is the provider's, closed with it)."""
        with self._lock:
            s3, self._s3 = self._s3, None
        if s3 is not None:
            s3.close()

    # -- one output line ----------------------------------------------------------------------------
    def _record(self, text: str, where: str) -> Iterator[tuple[str, Completion | ProviderError]]:
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None
        key = record.get("recordId") if isinstance(record, dict) else None
        if not isinstance(key, str):
            found = _RECORD_ID.search(text)
            if found is None:  # no record to blame: the executor sees the item unanswered and asks again
                log.warning("%s: an output line names no recordId; skipped: %.200s", where, text)
                return
            key = found.group(1)
            yield key, self.provider.error("bad_request", f"batch output {where}: malformed line: {text[:200]}")
            return
        if isinstance(record.get("error"), dict):
            error = record["error"]
            code = error.get("errorCode")
            status = code if isinstance(code, int) else None
            message = " ".join(str(error.get("errorMessage") or code or "error").split())
            yield key, self.provider.error(_kind_for("", status, message), f"batch record: {code}: {message}",
                                           status=status)
            return
        output = record.get("modelOutput")
        if not isinstance(output, dict):
            yield key, self.provider.error("bad_request", f"batch output {where}: record {key} has neither "
                                                          "modelOutput nor error")
            return
        try:  # parsed against the item's schema by the executor, which has the request (batch.py)
            yield key, self.provider.completion_from(output, _NO_SCHEMA, None)
        except (AttributeError, KeyError, TypeError) as exc:
            yield key, self.provider.error("bad_request", f"batch output {where}: record {key}: unreadable "
                                                          f"modelOutput ({type(exc).__name__})")

    # -- clients ------------------------------------------------------------------------------------
    def _bedrock(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.provider._client("bedrock"), operation)(**kwargs)
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001 - every botocore failure becomes a ProviderError kind
            raise self.provider._map_error(exc) from None

    def _s3_call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """S3 at the standard AWS endpoint (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` when set), never at
        the model spec's ``base_url``, which is Bedrock's."""
        with self._lock:
            if self._s3 is None:
                import boto3
                from botocore.config import Config

                session = boto3.session.Session(region_name=self.provider.spec.region or None)
                self._s3 = session.client("s3", config=Config(retries={"mode": "standard", "total_max_attempts": 5}))
        try:
            return getattr(self._s3, operation)(**kwargs)
        except Exception as exc:  # noqa: BLE001 - as for Bedrock, naming the S3 object
            mapped = self.provider._map_error(exc)
            where = f"s3://{kwargs.get('Bucket')}/{kwargs.get('Key') or kwargs.get('Prefix') or ''}"
            raise ProviderError(mapped.kind, f"{mapped} ({operation} {where})", status=mapped.status,
                                retry_after=mapped.retry_after, unreachable=mapped.unreachable) from None


def _split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b/")``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key

"""What every subcommand shares: the common flags, config loading with overrides, progress, exit codes.

The CLI contract (flag names, ``--json`` fields, exit codes) lives here so each workflow's subcommand
keeps it by construction: 0 success; 1 the job finished but failed items exceed ``--max-failed-ratio``;
2 bad input or config (one line naming the problem); 130 on Ctrl-C/SIGTERM after marking the job
cancelled (resumable).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError

EXIT_OK, EXIT_FAILED_ITEMS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


# -- shared flags ---------------------------------------------------------------------------------

def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The overrides every model-calling subcommand takes (the CLI contract's 'common model flags')."""
    from ..providers import DEFAULT_PROVIDER, provider_names
    from ..providers.structured import CHOICES as STRUCTURED_CHOICES

    parser.add_argument("--config", help="job config YAML (a notebook's 'save config' writes one)")
    parser.add_argument("--provider", help=f"{' | '.join(provider_names())} (default {DEFAULT_PROVIDER})")
    parser.add_argument("--model", help="model id (or a .gguf path for the local provider)")
    parser.add_argument("--base-url", help="endpoint of an OpenAI-compatible or CAII server")
    parser.add_argument("--region", help="AWS region for Bedrock")
    parser.add_argument("--api-key-env", help="NAME of the environment variable holding the key")
    parser.add_argument("--structured-output", choices=STRUCTURED_CHOICES,
                        help="how a reply's JSON schema is asked for (default auto: negotiated per endpoint)")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--rpm", type=int, help="requests-per-minute limit")
    parser.add_argument("--max-failed-ratio", type=float,
                        help="exit 1 when failed/(ok+failed) exceeds this (default 0.5)")
    add_run_flags(parser)
    add_output_flags(parser)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """What every job-running subcommand takes besides the model flags."""
    parser.add_argument("--wait", action="store_true",
                        help="when the job is already running in another process, wait for it instead of stopping")
    parser.add_argument("--executor", help="where the requests run: local (default), spark (docs/spark.md), or batch "
                        "(the provider's batch API: about half price, answers within 24 h; README 'Batch APIs')")
    parser.add_argument("--batch-poll-s", type=float, metavar="S",
                        help="batch executor: seconds between status polls at first (default 30, backing off)")
    parser.add_argument("--batch-bucket", metavar="BUCKET", help="batch executor on Bedrock: the S3 bucket of its files")
    parser.add_argument("--batch-prefix", metavar="PREFIX", help="batch executor on Bedrock: the S3 key prefix")
    parser.add_argument("--batch-role-arn", metavar="ARN",
                        help="batch executor on Bedrock: the IAM role Bedrock assumes to read and write the bucket")
    parser.add_argument("--spark-master", metavar="URL",
                        help="Spark master when no Spark session is running (default local[2]; yarn, k8s://...)")
    parser.add_argument("--partitions", type=int, metavar="N",
                        help="Spark partitions the requests are split into (default: the cluster's task slots)")
    parser.add_argument("--output-uri", metavar="URI",
                        help="also write the job's ok records as Parquet under URI/job=ID/ (a folder, hdfs://, s3a://)")


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="SDSTUDIO_HOME (default ~/sdstudio)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout at the end")


def apply_overrides(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Flags beat the config file; only flags that were given change anything."""
    model = data.setdefault("model", {})
    params = model.setdefault("parameters", {})
    run = data.setdefault("run", {})
    for flag, target, key in (("provider", model, "provider"), ("model", model, "model"),
                              ("base_url", model, "base_url"), ("region", model, "region"),
                              ("api_key_env", model, "api_key_env"),
                              ("structured_output", model, "structured_output"), ("temperature", params, "temperature"),
                              ("max_tokens", params, "max_tokens"), ("concurrency", run, "concurrency"),
                              ("rpm", run, "rpm"), ("max_failed_ratio", run, "max_failed_ratio"),
                              ("executor", run, "executor"), ("spark_master", run, "spark_master"),
                              ("partitions", run, "partitions"), ("output_uri", run, "output_uri"),
                              ("batch_poll_s", run, "batch_poll_s"), ("batch_bucket", run, "batch_bucket"),
                              ("batch_prefix", run, "batch_prefix"), ("batch_role_arn", run, "batch_role_arn")):
        value = getattr(args, flag, None)
        if value is not None:
            target[key] = value
    return data


def load_job_data(args: argparse.Namespace, kind: str, family: str | None = None) -> dict[str, Any]:
    """The config file's contents as a dict (empty without --config), checked to be of ``kind``; with ``family``,
    ``--resume JOB_ID`` and no --config, the resumed job's own config, checked alike (the command then applies its
    flags over either)."""
    if family is not None and getattr(args, "resume", None) is not None and not args.config:
        from ..store import Store

        data = Store.open(args.home).get_job(family, args.resume)["config"] or {}
        if data.get("kind", kind) != kind:
            raise ConfigError(f"{family} job {args.resume} is of kind {data['kind']}, not {kind}: `sdstudio "
                              f"{args.command}` cannot resume it; `sdstudio jobs` lists them")
        return data
    if not args.config:
        return {"kind": kind}
    from ..config import load_config

    _check_yaml_size(args.config)
    config = load_config(args.config)
    if config.kind != kind:
        raise ConfigError(f"{args.config} is a {config.kind} config; `sdstudio {args.command}` needs kind: {kind}")
    return config.model_dump(mode="json", exclude_none=True)


def _check_yaml_size(path: str) -> None:
    """Refuse a 'billion laughs' config before validation expands it (safeyaml.py says why). Problems
    reading or parsing the file are left to load_config, which words them."""
    import yaml

    from ..safeyaml import load

    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError):
        return
    try:
        load(text, path)
    except yaml.YAMLError:
        return


def build_config(model_cls: Any, data: dict[str, Any], label: str, args: argparse.Namespace | None = None) -> Any:
    """The job config the flags and the file describe, built the one way the notebooks build theirs too
    (``config.parse_job``): the same job typed here or in a notebook has the same hash and resumes.
    ``--resume JOB_ID`` alone takes that job's stored config as it is: a job saved before configs were
    written canonically keeps its hash."""
    from ..config import _validate, parse_job

    if getattr(args, "resume", None) is not None and not getattr(args, "config", None):
        config = _validate(model_cls, data, label)
    else:
        config = parse_job(model_cls, data, label, getattr(args, "home", None))
    run = getattr(config, "run", None)
    if run is not None and run.executor == "batch":
        from ..executors.batch_backend import check_batchable

        for spec in (getattr(config, "model", None), getattr(config, "judge", None)):
            if spec is not None:
                check_batchable(spec.provider)  # one line now, not a job opened and failed
    if args is not None:
        args.job_config = config  # the preview prices it at the batch rate too (show_preview)
    return config


# -- progress and results -------------------------------------------------------------------------

class ProgressBar:
    """tqdm on stderr, fed by the engine's progress callback (the notebooks use the same callback)."""

    def __init__(self, enabled: bool, unit: str = "req"):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            # redrawn up to 4 times a second; miniters=1: the engine calls at most every 0.1 s, so any call may redraw
            # (tqdm's default skips calls by the rate it has seen: a job whose rate dips shows a bar frozen for seconds)
            self.bar = tqdm(total=0, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=0.25, miniters=1)

    def __call__(self, progress: Any) -> None:
        if self.bar is None:
            return
        if self.bar.total != progress.total:
            self.bar.total = progress.total
        self.bar.update(progress.done - self.bar.n)
        self.bar.set_postfix(failed=progress.failed, attempts=progress.attempts,
                             tok=progress.tokens_in + progress.tokens_out, usd=f"{progress.cost_usd:.4f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def report(result: Any, args: argparse.Namespace, max_failed_ratio: float) -> int:
    """Print the summary (JSON or one human line) and choose the exit code."""
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        print(f"sdstudio: {result.kind} job {result.job_id} {result.status}: {result.ok} ok, {result.failed} failed, "
              f"{result.filtered} filtered; {sends(result)}; {result.tokens_in}+{result.tokens_out} tokens, "
              f"${result.cost_usd:.4f}, {result.elapsed_s:.1f}s", file=sys.stderr)
        for note in result.notes:
            print(f"sdstudio: note: {note}", file=sys.stderr)
    if result.status == "cancelled":
        return EXIT_INTERRUPTED
    return EXIT_FAILED_ITEMS if result.failed_ratio > max_failed_ratio else EXIT_OK


def sends(result: Any) -> str:
    """'12 requests, 15 attempts': the requests a run sent (one per work item) and the calls the provider got
    (retries and re-asks included), both, because providers bill and rate-limit attempts."""
    requests, attempts = result.requests_sent, result.attempts
    return f"{requests} request{'s' * (requests != 1)}, {attempts} attempt{'s' * (attempts != 1)}"


def show_preview(shown: Any, args: argparse.Namespace, first: str, job: str, prompt: str | None = None) -> int:
    """``--dry-run``: the first prompt on stdout and the estimate on stderr (``--json``: the preview
    object instead). ``first`` names the first request, ``job`` sums up what the job sends."""
    if args.json:
        data = shown.to_json()
        batch = batch_estimate(shown, getattr(args, "job_config", None))
        if batch is not None:
            data["est_batch_cost_usd"] = round(batch, 6)
        print(json.dumps(data, ensure_ascii=False))
        return EXIT_OK
    print(shown.prompt if prompt is None else prompt)
    tokens = ""
    if hasattr(shown, "prompt_tokens"):
        tokens = f": {'' if getattr(shown, 'exact_tokens', False) else '~'}{shown.prompt_tokens} tokens"
    cost = f"${shown.est_cost_usd:.4f}" if shown.price_known else "unknown (no price for a model)"
    batch = batch_estimate(shown, getattr(args, "job_config", None))
    if batch is not None and shown.price_known:
        cost += f" on demand, ${batch:.4f} through the batch API"
    print(f"\n--- {first}{tokens}; job: {job}, ~{shown.est_tokens_in} tokens in, ~{shown.est_tokens_out} out, "
          f"cost {cost}", file=sys.stderr)
    return EXIT_OK


def batch_estimate(shown: Any, config: Any) -> float | None:
    """The estimate at the batch price when the job runs on the batch executor (None otherwise): the on-demand
    estimate scaled by the model's batch/on-demand price ratio for these tokens (pricing.py says which)."""
    run, spec = getattr(config, "run", None), getattr(config, "model", None)
    if run is None or run.executor != "batch" or spec is None:
        return None
    from ..errors import SdstudioError
    from ..pricing import batch_price
    from ..providers import price, provider_class

    try:
        on_demand = price(spec)
    except SdstudioError:  # the preview itself says what is wrong with the model
        return None
    at_batch = batch_price(on_demand, provider_class(spec.provider))
    full = on_demand.cost(shown.est_tokens_in, shown.est_tokens_out)
    ratio = at_batch.cost(shown.est_tokens_in, shown.est_tokens_out) / full if full else 1.0
    return shown.est_cost_usd * ratio


def _after_run(job: Any, result: Any) -> str | None:
    """``spark_output.after_run``; that module (and spark_io, ~15 ms of imports) is loaded only for a job that may
    write Parquet: one with ``run.output_uri`` set or a location kept from an earlier run."""
    store, run = getattr(job, "store", None), getattr(getattr(job, "config", None), "run", None)
    if store is not None and result is not None and getattr(run, "output_uri", None) is None \
            and store.output_uri(result.job_id) is None:
        return None
    from ..spark_output import after_run

    return after_run(job, result)


def run_with_progress(job: Any, args: argparse.Namespace, max_failed_ratio: float) -> int:
    """Run a workflow object (``.run(resume=, on_progress=)``) under a tqdm bar on stderr; report it."""
    store = getattr(job, "store", None)
    if store is not None:
        store.require_writable()  # a read-only home: its one line alone, before a bar is drawn
    bar = ProgressBar(not args.json)
    try:
        result = job.run(resume=args.resume, on_progress=bar, wait=args.wait)
    finally:
        bar.close()
    location = _after_run(job, result)  # --output-uri: the ok records as Parquet too (spark_output.py)
    if location is not None and not args.json:
        print(f"sdstudio: job {result.job_id}'s ok records written to {location}", file=sys.stderr)
    return report(result, args, max_failed_ratio)

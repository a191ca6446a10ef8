"""``sdstudio jobs``: the job history (``jobs show ID`` for one job, its config, record counts, provider batches and,
for a generation job, its diversity report (diversity.py);
``jobs cancel ID`` cancels a batch job's submitted batches at the provider, from any process)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError
from .common import EXIT_OK, add_output_flags


def register(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="list jobs, `jobs show ID`, or `jobs cancel ID` (a batch job's batches)")
    jobs.add_argument("action", nargs="?", choices=("list", "show", "cancel"), default="list")
    jobs.add_argument("id", nargs="?", type=int)
    jobs.add_argument("--kind", help="only jobs of this kind (generation, documents, workflow, alignment, "
                      "candidates, evolve, evolutions, evaluation, export; generation/evaluation/export list the "
                      "seed's table)")
    add_output_flags(jobs)
    jobs.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..store import Store

    store = Store.open(args.home)
    if args.action == "cancel":
        return cancel(store, args)
    if args.action == "show":
        if args.id is None:
            raise ConfigError("`sdstudio jobs show` needs a job id")
        family = store.job_family(args.id)
        row = store.get_job(family, args.id)
        if family != "export":
            row["records"] = store.count_records(family, args.id)
        row["children"] = [child["id"] for child in store.child_jobs(args.id)]
        row["notes"] = store.get_job(None, args.id).get("notes") or []  # e.g. the structured-output dialect used
        from ..executors.batch_jobs import job_batches

        batches = job_batches(store, args.id)  # a batch job's provider batches and their states
        if batches:
            row["batches"] = batches
        if family == "generation":
            from ..diversity import job_report

            report = job_report(store, args.id, args.home)  # computed from the records: nothing stored
            row["diversity"] = report.to_json() if report is not None else None
        row = masked(row)
        print(json.dumps(row, ensure_ascii=False, indent=None if args.json else 2, default=str))
        return EXIT_OK
    seed_table = args.kind in ("generation", "evaluation", "export")
    frame = store.jobs(args.kind) if seed_table else store.jobs(kind=args.kind)
    for column in ("config", "error"):
        if column in frame.columns:
            frame[column] = frame[column].map(lambda value, name=column: masked(value, name))
    if args.json:
        print(frame.to_json(orient="records"))
    elif frame.empty:
        print("no jobs yet", file=sys.stderr)
    else:
        columns = [c for c in ("id", "kind", "parent_id", "created_at", "status", "what", "use_case", "model_id", "ok", "failed",
                               "filtered", "requests", "attempts", "tokens_in", "tokens_out", "cost_usd") if c in frame.columns]
        print(frame[columns].to_string(index=False))
    return EXIT_OK



def cancel(store: Any, args: argparse.Namespace) -> int:
    """Cancel the job's batches still running at the provider; a run polling them ends cancelled, and a resume
    submits again only what they left unanswered."""
    from ..executors.batch_jobs import cancel_job_batches

    if args.id is None:
        raise ConfigError("`sdstudio jobs cancel` needs a job id")
    store.require_writable()
    cancelled = cancel_job_batches(store, args.id)
    if args.json:
        print(json.dumps({"job_id": args.id, "cancelled": cancelled}))
    else:
        what = ", ".join(cancelled) if cancelled else "none was still running"
        print(f"sdstudio: job {args.id}: batches cancelled: {what}", file=sys.stderr)
    return EXIT_OK


URL_FIELDS = frozenset({"base_url", "hf_endpoint"})


def masked(value: Any, key: str | None = None) -> Any:
    """A stored job value as it may be shown: URL fields in their masked form and errors with URL credentials
    masked. New rows are stored that way already; a row written before URL credentials were masked is not,
    and must not print them either."""
    from ..redact import mask_urls
    from ..urlsecrets import shown

    if isinstance(value, dict):
        return {k: masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, str):
        if key in URL_FIELDS:
            return shown(value)
        if key == "config" and value.startswith("{"):  # the seed tables' config column: JSON text
            try:
                return json.dumps(masked(json.loads(value)), ensure_ascii=False)
            except ValueError:
                return mask_urls(value)
        if key == "error":
            return mask_urls(value)
    return value

"""``sdstudio jobs``: the job history (``jobs show ID`` for one job, its config and record counts)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError
from .common import EXIT_OK, add_output_flags


def register(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="list jobs, or `jobs show ID`")
    jobs.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    jobs.add_argument("id", nargs="?", type=int)
    jobs.add_argument("--kind", help="only jobs of this kind (generation, documents, workflow, alignment, "
                      "candidates, evaluation, export; generation/evaluation/export list the seed's table)")
    add_output_flags(jobs)
    jobs.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..store import Store

    store = Store.open(args.home)
    if args.action == "show":
        if args.id is None:
            raise ConfigError("`sdstudio jobs show` needs a job id")
        family = store.job_family(args.id)
        row = store.get_job(family, args.id)
        if family != "export":
            row["records"] = store.count_records(family, args.id)
        row["children"] = [child["id"] for child in store.child_jobs(args.id)]
        row["notes"] = store.get_job(None, args.id).get("notes") or []  # e.g. the structured-output dialect used
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

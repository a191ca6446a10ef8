"""``sdstudio documents``: grounded Q/A from PDF, DOCX, TXT, Markdown and HTML files.

A file that cannot be used (corrupt, encrypted without a password, empty, binary, unsupported type, no
text) is reported on stderr (and in ``--json``'s ``notes``) and skipped; the others still run and the
exit code follows the usual contract. A path that matches nothing, or a batch with no usable file at
all, exits 2 before any call.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from .common import (add_model_flags, apply_overrides, build_config, load_job_data, run_with_progress, show_preview)


def register(sub: argparse._SubParsersAction) -> None:
    doc = sub.add_parser("documents", help="grounded Q/A from documents (PDF, DOCX, TXT, Markdown, HTML)")
    add_model_flags(doc)
    doc.add_argument("--files", nargs="+", metavar="PATH", help="files, folders or globs (quote globs)")
    doc.add_argument("--use-case", help="default: document_qa")
    doc.add_argument("--chunk-tokens", type=int, metavar="N", help="chunk size in tokens (default 512)")
    doc.add_argument("--chunk-overlap", type=int, metavar="N", help="tokens shared by consecutive chunks (default 64)")
    count = doc.add_mutually_exclusive_group()
    count.add_argument("--per-chunk", type=int, metavar="N", help="items per chunk (default 3)")
    count.add_argument("--total", type=int, metavar="N", help="items for the whole job, spread evenly over chunks")
    doc.add_argument("--batch-size", type=int, metavar="K", help="items asked per call")
    doc.add_argument("--grounding", action=argparse.BooleanOptionalAction, default=None,
                     help="check each answer against its chunk with a judge call; unsupported -> filtered")
    doc.add_argument("--judge-model", metavar="M", help="--grounding: the judge's model (default: --model)")
    doc.add_argument("--password-env", metavar="NAME", help="environment variable holding encrypted PDFs' password")
    doc.add_argument("--resume", type=int, metavar="JOB_ID", help="continue a killed or cancelled job")
    doc.add_argument("--dry-run", action="store_true", help="show the first prompt and the estimate; no call")
    doc.set_defaults(handler=run)


def job_config(args: argparse.Namespace):
    """The DocumentJob these flags (and ``--config``, or the resumed job's config) describe."""
    from ..config import DocumentJob

    data = load_job_data(args, "documents", "generation")
    if args.files:
        data["files"] = args.files
        data.pop("file_hashes", None)  # another set of files: a new job
    if not data.get("files"):
        raise ConfigError("no documents: give --files PATH... (files, folders or globs) or files: in --config")
    for flag, key in (("use_case", "use_case"), ("chunk_tokens", "chunk_tokens"), ("chunk_overlap", "chunk_overlap"),
                      ("batch_size", "batch_size"), ("grounding", "grounding"), ("password_env", "password_env")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    if args.per_chunk is not None:
        data.update(per_chunk=args.per_chunk, total=None)
    if args.total is not None:
        data.update(total=args.total, per_chunk=None)
    apply_overrides(data, args)
    if args.judge_model is not None:
        data["judge"] = {**(data.get("judge") or {**data["model"], "parameters": {"temperature": 0.0}}),
                         "model": args.judge_model}
    return build_config(DocumentJob, data, args.config or "documents flags", args)


def run(args: argparse.Namespace) -> int:
    from ..workflows.documents import DocumentRun, preview

    config = job_config(args)
    if args.dry_run:
        shown = preview(config, home=args.home)
        if not args.json:
            for message in shown.messages:
                print(f"sdstudio: note: {message}", file=sys.stderr)
        checks = f" + {shown.grounding_requests} grounding checks" if shown.grounding_requests else ""
        return show_preview(shown, args, "first prompt", f"{shown.documents} document(s), {shown.chunks} chunks, "
                            f"{shown.items} items in {shown.requests} requests{checks}")
    return run_with_progress(DocumentRun(config, home=args.home), args, config.run.max_failed_ratio)

"""``sdstudio export``: a job's records as trainer-ready files, optionally uploaded to the Hugging Face Hub."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError
from .common import EXIT_OK, add_output_flags, build_config, load_job_data


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("export", help="write a job's rows as JSONL/CSV/Parquet and optionally upload them to "
                                        "the Hugging Face Hub")
    exp.add_argument("--config", help="export config YAML (kind: export)")
    exp.add_argument("--job", type=int, nargs="+", metavar="JOB_ID", help="generation job id(s) to export")
    exp.add_argument("--style", choices=("raw", "sft-messages", "sft-prompt-completion", "dpo", "kto", "openai-chat"))
    exp.add_argument("--format", choices=("jsonl", "csv", "parquet"))
    exp.add_argument("--out", metavar="DIR", help="write into this folder (new or empty) instead of a new versioned "
                                                  "folder SDSTUDIO_HOME/exports/NAME/vN")
    exp.add_argument("--overwrite", action="store_true", default=None,
                     help="with --out: accept a non-empty folder; only the data files and card this export writes "
                          "are replaced (a README.md no export wrote stays; the card is then DATASET_CARD.md)")
    exp.add_argument("--name", help="export name (the folder under exports/ and the card's title)")
    exp.add_argument("--min-score", type=float, metavar="X", help="keep rows the judge scored at least X")
    exp.add_argument("--reviewed-only", action="store_true", default=None, help="keep reviewer-accepted rows only")
    exp.add_argument("--ignore-edits", action="store_true", help="export original items, not reviewers' edits")
    exp.add_argument("--test-fraction", type=float, metavar="F", help="hold out this fraction as a test split")
    exp.add_argument("--seed", type=int, help="seed of the train/test split (default 42)")
    exp.add_argument("--system-prompt", help="a system turn first in messages styles")
    exp.add_argument("--conversational", action="store_true", default=None,
                     help="dpo/kto: TRL's conversational form (message lists) instead of plain strings")
    exp.add_argument("--with-reasoning", action="store_true", default=None,
                     help="keep the model's reasoning: the assistant message's thinking (sft-messages), a reasoning "
                          "column (sft-prompt-completion, raw); dropped without it")
    exp.add_argument("--license", help="license id for the dataset card (default: other)")
    exp.add_argument("--hf-repo", metavar="OWNER/NAME", help="also upload to this Hugging Face dataset repo "
                                                             "(token from HF_TOKEN)")
    exp.add_argument("--hf-endpoint", metavar="URL", help="Hub endpoint (default: $HF_ENDPOINT or huggingface.co)")
    exp.add_argument("--public", action="store_true", help="create the Hub repo public (default private)")
    add_output_flags(exp)
    exp.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..config import ExportJob
    from ..export import ExportUploadError, export_dataset

    data = load_job_data(args, "export")
    for flag, key in (("job", "jobs"), ("style", "style"), ("format", "format"), ("out", "out"), ("name", "name"),
                      ("min_score", "min_score"), ("reviewed_only", "reviewed_only"),
                      ("test_fraction", "test_fraction"), ("seed", "seed"), ("system_prompt", "system_prompt"),
                      ("license", "license"), ("hf_repo", "hf_repo"), ("hf_endpoint", "hf_endpoint"),
                      ("conversational", "conversational"), ("overwrite", "overwrite"),
                      ("with_reasoning", "with_reasoning")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    if args.ignore_edits:
        data["prefer_edits"] = False
    if args.public:
        data["private"] = False
    if not data.get("jobs"):
        raise ConfigError("give --job JOB_ID (a generation job id; `sdstudio jobs` lists them)")
    config = build_config(ExportJob, data, args.config or "export flags")
    try:
        result = export_dataset(config, home=args.home)
    except ExportUploadError as exc:
        if args.json:  # batch callers still learn the export id and where the files are
            print(json.dumps({**exc.result.to_json(), "error": str(exc)}, ensure_ascii=False))
        raise
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        splits = ", ".join(f"{k} {v}" for k, v in result.splits.items())
        where = f"; uploaded to {result.repo_id} at {result.revision[:12]}" if result.repo_id else ""
        print(f"sdstudio: export {result.export_id} {result.status}: {result.rows} rows ({splits}), style "
              f"{result.style}, {result.format} in {result.directory}{where}", file=sys.stderr)
        for note in result.notes:
            print(f"sdstudio: note: {note}", file=sys.stderr)
    return EXIT_OK

"""``sdstudio suggest-prompt``: a use case drafted by the model from your example data (column statistics and a
few rows), saved as a folder in the home's templates/ for you to edit, then ``generate --use-case NAME``."""
from __future__ import annotations

import argparse
import json
import sys

from .common import EXIT_OK
from .topics import add_suggestion_model_flags, suggestion_model


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("suggest-prompt", help="draft a use case (instruction, requirements, output keys) from "
                         "example data")
    cmd.add_argument("--input", required=True, metavar="FILE", help="examples: CSV, JSONL, JSON, Excel or Parquet")
    cmd.add_argument("--name", help="the use case's folder name (default: the file's name; an existing folder is "
                     "never overwritten)")
    cmd.add_argument("--describe", metavar="TEXT", help="what the data is for, in a sentence")
    cmd.add_argument("--rows", type=int, default=5, help="rows shown to the model besides the statistics (default 5)")
    add_suggestion_model_flags(cmd)
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..suggest_prompt import column_statistics, draft_prompt, read_examples, sample_rows, suggest_use_case

    model = suggestion_model(args)
    if args.dry_run:
        frame = read_examples(args.input, args.home)
        prompt = draft_prompt(column_statistics(frame), sample_rows(frame, args.rows), args.describe)
        print(json.dumps({"prompt": prompt}, ensure_ascii=False) if args.json else prompt)
        return EXIT_OK
    draft = suggest_use_case(args.input, model, home=args.home, name=args.name, describe=args.describe,
                             rows=args.rows)
    if args.json:
        print(json.dumps(draft.to_json(), ensure_ascii=False))
    else:
        print((draft.folder / "use_case.yaml").read_text(encoding="utf-8"))
        print(f"sdstudio: saved use case {draft.name} in {draft.folder} ({draft.tokens_in}+{draft.tokens_out} "
              f"tokens). Edit it, then: sdstudio generate --use-case {draft.name} --dry-run", file=sys.stderr)
    return EXIT_OK

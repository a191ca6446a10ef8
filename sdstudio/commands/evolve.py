"""``sdstudio evolve``: Evol-Instruct over a generation job's instructions (harder or broader, R rounds, answered)."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from .common import add_model_flags, apply_overrides, build_config, load_job_data, run_with_progress, show_preview


def register(sub: argparse._SubParsersAction) -> None:
    from ..configs.evolve import METHODS

    ev = sub.add_parser("evolve", help="Evol-Instruct: rewrite a job's instructions harder or broader, answer again")
    add_model_flags(ev)
    ev.add_argument("--job", type=int, metavar="JOB_ID", help="the generation job whose instructions evolve")
    ev.add_argument("--rounds", type=int, metavar="R", help="rewriting rounds (default 1)")
    ev.add_argument("--methods", metavar="M,M", help=f"methods drawn from each round (default all: {','.join(METHODS)})")
    ev.add_argument("--prompt-col", metavar="FIELD", help="the item field holding the instruction (default: the "
                    "source job's prompt field)")
    ev.add_argument("--limit", type=int, metavar="N", help="at most N instructions (the first ones)")
    ev.add_argument("--seed", type=int, help="which method each instruction gets in each round (default 0)")
    ev.add_argument("--copy-threshold", type=float, metavar="X",
                    help="a rewrite at least this similar to its input is eliminated as a copy (default 0.9)")
    ev.add_argument("--system-prompt", help="sent before every evolved instruction when it is answered")
    ev.add_argument("--answer-model", metavar="M", help="the model that answers (default: --model; same endpoint)")
    ev.add_argument("--resume", type=int, metavar="JOB_ID", help="continue a killed or cancelled evolve job")
    ev.add_argument("--dry-run", action="store_true", help="show the first rewriting request and the estimate; no call")
    ev.set_defaults(handler=run)


def config_data(args: argparse.Namespace) -> dict[str, Any]:
    data = load_job_data(args, "evolve", "generation")
    for flag, key in (("job", "source_job"), ("rounds", "rounds"), ("methods", "methods"),
                      ("prompt_col", "prompt_column"), ("limit", "limit"), ("seed", "seed"),
                      ("copy_threshold", "copy_threshold"), ("system_prompt", "system_prompt")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    if "source_job" not in data:
        raise ConfigError("sdstudio evolve needs --job JOB_ID (the generation job whose instructions evolve)")
    apply_overrides(data, args)
    if args.answer_model:  # another model on the same endpoint, with the model's parameters
        data["answer_model"] = {**data["model"], "model": args.answer_model}
    return data


def job_config(args: argparse.Namespace):
    from ..configs.evolve import EvolveJob

    return build_config(EvolveJob, config_data(args), args.config or "evolve flags", args)


def run(args: argparse.Namespace) -> int:
    from ..workflows.evolve import EvolveRun, preview

    config = job_config(args)
    if args.dry_run:
        shown = preview(config, home=args.home)
        return show_preview(shown, args, "first rewriting request",
                            f"{shown.seeds} instructions x {shown.rounds} round(s), up to {shown.requests} requests "
                            "(rewrites and answers)")
    return run_with_progress(EvolveRun(config, home=args.home), args, config.run.max_failed_ratio)

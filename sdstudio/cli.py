"""The ``sdstudio`` command for batch jobs (Cloudera AI Jobs: no TTY, no one watching).

Every subcommand builds the same pydantic config the notebooks build (``--config FILE.yaml`` plus flags
for the common overrides) and runs it through the same package API; ``commands/common.py`` holds the
contract they share. Imports stay inside the handlers so ``sdstudio --help`` starts fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .commands.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from .errors import SdstudioError
from .redact import mask, mask_urls
from .workflows import registry

UTILITY_COMMANDS = ("sdstudio.commands.jobs", "sdstudio.commands.models", "sdstudio.commands.serve",
                    "sdstudio.commands.topics", "sdstudio.commands.suggest_prompt")


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (the contract for exit 2), not a page of usage first."""

    def error(self, message: str) -> NoReturn:
        # mask_urls: argparse may echo a mistyped flag's argument, a URL with credentials and all
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {mask_urls(message)} (see `{self.prog} --help`)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand; with ``command`` (the one about to run), those registered before it and itself only:
    a subcommand's flags may import what its choices come from (evolve's methods load every config), and
    `sdstudio generate` should not wait for the others'."""
    parser = Parser(prog="sdstudio", description="Synthetic Data Studio: generate, judge and "
                    "export synthetic datasets for LLM fine-tuning")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (*registry.commands(), *UTILITY_COMMANDS):  # one subcommand per registered workflow
        importlib.import_module(module).register(sub)
        if command is not None and command in sub.choices:
            break
    return parser


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv and not argv[0].startswith("-") else None).parse_args(argv)
    if getattr(args, "home", None):
        os.environ["SDSTUDIO_HOME"] = args.home  # one home for everything this process opens
    signal.signal(signal.SIGTERM, _interrupt)  # a stopped Cloudera AI Job cancels cleanly, like Ctrl-C
    try:
        return args.handler(args)
    except SdstudioError as exc:
        if os.environ.get("SDSTUDIO_DEBUG"):
            raise
        print(f"sdstudio: error: {mask(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("sdstudio: interrupted; the job is marked cancelled and resumes with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the environment (OSError) or a bug: still one line, job closed
        if os.environ.get("SDSTUDIO_DEBUG"):
            raise
        what = "" if isinstance(exc, OSError) else "unexpected "
        detail = mask((str(exc).strip().splitlines() or [""])[0])
        print(f"sdstudio: error: {what}{type(exc).__name__}: {detail} (the job is marked failed and its saved rows "
              "kept; SDSTUDIO_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_BAD_INPUT


def entry() -> None:
    """The ``sdstudio`` console script: ``main``, then out at once. A finished command has committed everything;
    its stores are checkpointed and closed here and the exit handlers run, but the interpreter's teardown of every
    module and object (50-120 ms after a 1280-request job: a fifth of the time a user waits beyond the requests) is
    skipped. Its start-up runs with the garbage collector paused (collector.py). ``main`` itself stays an ordinary
    function for callers in the same process (tests, notebooks)."""
    from .collector import pause_collector

    pause_collector()
    code = main()
    import atexit

    from .store.core import close_all

    close_all()
    atexit._run_exitfuncs()  # the providers' and libraries' own exit handlers (llama.cpp models, thread pools)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(int(code or 0))


if __name__ == "__main__":
    entry()

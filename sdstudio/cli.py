"""The ``sdstudio`` command. Subcommands exist only once their workflow works (no stubs).

Errors a user can cause print one line on stderr and exit 2; ``SDSTUDIO_DEBUG=1`` shows the traceback.
Imports stay inside the handlers so ``sdstudio --help`` starts fast.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import SdstudioError

EXIT_OK, EXIT_FAILED_ITEMS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _repo_notebooks() -> Path:
    return Path(__file__).resolve().parent.parent / "notebooks"


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the notebooks as Voilà dashboards, opening on the home notebook."""
    import subprocess

    from .home import init_home
    from .store import Store

    home = init_home(args.home)
    Store.open(home).close()  # create/migrate metadata.db before the first page asks for it
    notebooks = Path(args.notebooks).resolve()
    page = notebooks / args.notebook
    if not page.is_file():
        raise SdstudioError(f"notebook {page} does not exist")
    env = {**os.environ, "SDSTUDIO_HOME": str(home)}
    url = f"http://{args.host}:{args.port}/voila/render/{args.notebook}"
    print(f"sdstudio: home {home}\nsdstudio: serving {url}", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "voila", str(notebooks), f"--Voila.ip={args.host}",
           f"--port={args.port}", "--no-browser", "--Voila.show_tracebacks=False"]
    return subprocess.call(cmd, env=env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdstudio", description="Synthetic Data Studio")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve the dashboards with Voilà")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8866)
    serve.add_argument("--notebook", default="00_home.ipynb", help="page to open first")
    serve.add_argument("--notebooks", default=str(_repo_notebooks()), help=argparse.SUPPRESS)
    serve.add_argument("--home", help="SDSTUDIO_HOME (default ~/sdstudio)")
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SdstudioError as exc:
        if os.environ.get("SDSTUDIO_DEBUG"):
            raise
        print(f"sdstudio: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
